// The layers as a user builds them on their own (issue 20): every parameter a layer
// trains is among its parameters() and nothing it lists goes unused, for every FFN kind
// and router (the shared hypernetwork included, listed once); the language model's state
// dict keys as before; FfnOptions (no init reading a layer count, a router that spreads
// tokens), presets from the API, forward without a Generator, ModuleList and Sequential.
#include <filesystem>
#include <map>
#include <set>

#include "hmoe.h"  // what a user includes: modules, layers, models (and the rest)
#include "models/train/config.h"
#include "tests/support/model_util.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// The leaves a backward from `root` would fill: its graph's AccumulateGrad nodes.
std::set<const autograd::Node*> leaf_nodes(const Tensor& root) {
  std::set<const autograd::Node*> seen, leaves;
  std::vector<const autograd::Node*> todo{root.grad_fn().get()};
  while (!todo.empty()) {
    const autograd::Node* n = todo.back();
    todo.pop_back();
    if (n == nullptr || !seen.insert(n).second) continue;
    if (dynamic_cast<const autograd::AccumulateGrad*>(n)) leaves.insert(n);
    for (const autograd::Edge& e : n->next_edges) todo.push_back(e.node.get());
  }
  return leaves;
}

// The loss's leaves are exactly m's parameters: none outside them (a parameter the
// layer uses but does not list would be left out of an optimiser and a save), and
// every one of them reached; then a backward gives each a gradient.
void expect_parameters_are_what_it_trains(const nn::Module& m, const Tensor& loss) {
  const std::set<const autograd::Node*> leaves = leaf_nodes(loss);
  std::set<const autograd::Node*> params;
  for (const auto& [n, p] : m.named_parameters()) {
    const AutogradMeta* meta = p.unsafe_impl()->autograd.get();
    const std::shared_ptr<autograd::Node> acc = meta ? meta->grad_accumulator.lock() : nullptr;
    EXPECT_TRUE(acc && leaves.count(acc.get())) << "parameter '" << n << "' is not reached by the loss";
    params.insert(acc.get());
  }
  for (const autograd::Node* l : leaves) EXPECT_TRUE(params.count(l)) << "a tensor outside parameters() is trained";
  EXPECT_EQ(leaves.size(), m.parameters().size());
  loss.backward();
  for (const auto& [n, p] : m.named_parameters()) EXPECT_TRUE(p.grad().defined()) << "no gradient for '" << n << "'";
}

// small_layer_config's sizes, 4 experts, with the router asked for and every aux loss,
// initialised as a layer of its own.
model::FfnOptions small_options(model::RouterKind router, int64_t k, bool noisy) {
  model::ModelConfig c = small_layer_config(4, k);
  c.router = router;
  c.noisy = noisy;
  c.jitter = router == model::RouterKind::switch_ ? 0.1 : 0.0;
  c.aux_lb_coef = 0.01;
  c.aux_z_coef = 0.001;
  model::FfnOptions o = model::ffn_options(c);
  o.out_init_std = o.init_std;
  o.router_init_std = 0.02;
  return o;
}

std::shared_ptr<model::FeedForward> make_ffn(model::FfnKind kind, const model::FfnOptions& o, Generator& gen) {
  switch (kind) {
    case model::FfnKind::dense:
      return std::make_shared<model::DenseFFN>(o, gen);
    case model::FfnKind::moe:
      return std::make_shared<model::MoEFFN>(o, gen);
    case model::FfnKind::hypermoe:
      return std::make_shared<model::HyperMoEFFN>(o, gen);
  }
  return nullptr;
}

Tensor ffn_loss(model::FeedForward& f, int64_t d, uint64_t seed) {
  model::FfnStats stats;
  Generator noise(seed);
  const Tensor y = f.forward(randn_t({16, d}, seed, DType::f32), stats, noise);
  Tensor loss = sum(y * y);
  return stats.aux_loss.defined() ? loss + stats.aux_loss : loss;
}

struct RouterCase {
  model::RouterKind router;
  int64_t k;
  bool noisy;
};

TEST(LayerParameters, EveryFfnKindAloneListsAllItTrains) {
  const RouterCase cases[] = {
      {model::RouterKind::topk, 1, true}, {model::RouterKind::topk, 2, false}, {model::RouterKind::switch_, 1, false}};
  for (model::FfnKind kind : {model::FfnKind::dense, model::FfnKind::moe, model::FfnKind::hypermoe})
    for (const RouterCase& rc : cases) {
      SCOPED_TRACE(::testing::Message() << model::name(kind) << " " << model::name(rc.router) << " k " << rc.k
                                        << (rc.noisy ? " noisy" : ""));
      const model::FfnOptions o = small_options(rc.router, rc.k, rc.noisy);
      Generator gen(5);
      auto f = make_ffn(kind, o, gen);
      expect_parameters_are_what_it_trains(*f, ffn_loss(*f, o.d_model, 3));
    }
}

TEST(LayerParameters, HyperMoELayerOwnsOrSharesItsHypernetwork) {
  const model::FfnOptions o = small_options(model::RouterKind::topk, 2, true);
  Generator gen(5);
  model::HyperMoEFFN alone(o, gen);
  ASSERT_NE(alone.hypernetwork(), nullptr);
  EXPECT_EQ(alone.hypernetwork()->layers(), 1);
  int64_t hyper_params = 0;
  for (const auto& [n, p] : alone.named_parameters()) hyper_params += n.starts_with("hyper.") ? p.numel() : 0;
  EXPECT_EQ(hyper_params, alone.hypernetwork()->num_parameters());
  EXPECT_GT(hyper_params, 0);

  // Two layers sharing one hypernetwork, in a list: each lists it, the list once.
  auto hyper = std::make_shared<model::HyperNetwork>(o, 2, gen);
  nn::ModuleList layers;
  auto l0 = layers.push_back(std::make_shared<model::HyperMoEFFN>(o, gen, 0, hyper));
  auto l1 = layers.push_back(std::make_shared<model::HyperMoEFFN>(o, gen, 1, hyper));
  EXPECT_EQ(l0->hypernetwork(), l1->hypernetwork());
  EXPECT_EQ(layers.num_parameters(), l0->num_parameters() + l1->num_parameters() - hyper->num_parameters());
  for (const auto& [n, p] : layers.named_parameters()) EXPECT_FALSE(n.starts_with("1.hyper.")) << n;
  Tensor loss = ffn_loss(*l0, o.d_model, 3) + ffn_loss(*l1, o.d_model, 4);
  expect_parameters_are_what_it_trains(layers, loss);
  EXPECT_HMOE_ERROR(model::HyperMoEFFN(o, gen, 2, hyper), "MoE layer 2 of a hypernetwork built for 2 layers");

  // apply() visits the list, both layers, and the shared hypernetwork once.
  std::map<const nn::Module*, int> visits;
  layers.apply([&](nn::Module& m) { ++visits[&m]; });
  EXPECT_EQ(visits[&layers], 1);
  EXPECT_EQ(visits[l0.get()], 1);
  EXPECT_EQ(visits[l1.get()], 1);
  EXPECT_EQ(visits[hyper.get()], 1);
  for (const auto& [m, n] : visits) EXPECT_EQ(n, 1);
}

// The keys main (7aa4f1a) wrote for small_lm_config(4, 2): the hypernetwork once, at the top.
const char* const kMainKeys[] = {"wte.weight",
                                 "wpe.weight",
                                 "hyper.layer_emb",
                                 "hyper.wh.weight",
                                 "hyper.wh.bias",
                                 "hyper.head_down.weight",
                                 "hyper.head_down.bias",
                                 "hyper.head_up.weight",
                                 "hyper.head_up.bias",
                                 "hyper.head_bdown.weight",
                                 "hyper.head_bdown.bias",
                                 "hyper.head_bup.weight",
                                 "hyper.head_bup.bias"};
const char* const kMainBlockKeys[] = {
    "ln1.weight",     "ln1.bias",          "attn.qkv.weight",  "attn.qkv.bias",   "attn.proj.weight", "attn.proj.bias",
    "ln2.weight",     "ln2.bias",          "ffn.w1",           "ffn.b1",          "ffn.w2",           "ffn.b2",
    "ffn.expert_emb", "ffn.router.weight", "ffn.noise.weight", "ffn.sel1.weight", "ffn.sel1.bias",    "ffn.sel2.weight",
    "ffn.sel2.bias"};

TEST(LayerParameters, LanguageModelKeysUnchangedAndAllTrained) {
  const model::ModelConfig c = small_lm_config(4, 2);
  model::LanguageModel m(c, 1);
  std::vector<std::string> want(std::begin(kMainKeys), std::end(kMainKeys));
  for (int b = 0; b < 2; ++b)
    for (const char* k : kMainBlockKeys) want.push_back("blocks." + std::to_string(b) + "." + k);
  want.push_back("ln_f.weight");
  want.push_back("ln_f.bias");
  std::vector<std::string> got;
  for (const auto& [n, t] : m.state_dict()) got.push_back(n);
  EXPECT_EQ(got, want);

  Generator noise(2);
  const Tensor ids = from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  const model::LmOutput out = m.forward(ids, noise);
  expect_parameters_are_what_it_trains(m, sum(out.logits * out.logits) + out.aux_loss);
}

TEST(LayerOptions, ModelLayersAreBuiltFromFfnOptions) {
  model::ModelConfig c = small_layer_config(4, 2);
  c.n_layer = 8;
  const model::FfnOptions o = model::ffn_options(c);
  EXPECT_EQ(o.out_init_std, 0.02 / std::sqrt(16.0));
  EXPECT_EQ(o.router_init_std, 0.0);
  Generator g1(7), g2(7);
  model::MoEFFN from_cfg(c, g1), from_opts(o, g2);
  const auto a = from_cfg.named_parameters(), b = from_opts.named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(max_abs_diff(a[i].second, b[i].second), 0.0) << a[i].first;
  // The LM's router starts at zero; a layer's own default draws it.
  for (const auto& [n, p] : a) {
    if (n == "router.weight") {
      EXPECT_EQ(max_abs_diff(p, zeros_like(p)), 0.0);
    }
  }
  model::FfnOptions bad = o;
  bad.top_k = 5;
  EXPECT_HMOE_ERROR(model::MoEFFN(bad, g1), "top_k");
}

// Tokens routed in eval, without router noise: a zero router sends all to experts 0..k-1,
// the default init of a layer alone spreads them.
TEST(LayerOptions, RouterInitSpreadsTokens) {
  for (double router_std : {0.0, 0.02}) {
    model::FfnOptions o;  // d_model 128, 8 experts, top-1
    o.d_model = 32;
    o.d_ff = 16;
    o.noisy = false;
    o.router_init_std = router_std;
    Generator gen(1);
    model::MoEFFN f(o, gen);
    f.eval();
    model::FfnStats stats;
    f.forward(randn_t({256, o.d_model}, 4, DType::f32), stats);
    const std::vector<int64_t>& counts = stats.expert_counts.at(0);
    int64_t used = 0;
    for (int64_t c : counts) used += c > 0;
    if (router_std == 0) {
      EXPECT_EQ(counts[0], 256);
    } else {
      EXPECT_GE(used, 6) << "tokens should spread over the 8 experts";
    }
  }
}

TEST(LayerForward, WithoutGeneratorInEval) {
  const model::FfnOptions o = small_options(model::RouterKind::topk, 2, true);
  Generator gen(5);
  model::HyperMoEFFN f(o, gen);
  const Tensor x = randn_t({16, o.d_model}, 3, DType::f32);
  EXPECT_HMOE_ERROR(f.forward(x), "pass a Generator, or call eval()");
  f.eval();
  model::FfnStats stats;
  Generator noise(9);
  EXPECT_EQ(max_abs_diff(f.forward(x), f.forward(x, stats, noise)), 0.0);

  model::ModelConfig c = small_lm_config(4, 2);
  model::LanguageModel m(c, 1);
  const Tensor ids = from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_HMOE_ERROR(m.forward(ids), "pass a Generator, or call eval()");
  m.eval();
  Generator n2(9);
  EXPECT_EQ(max_abs_diff(m.forward(ids).logits, m.forward(ids, n2).logits), 0.0);
}

TEST(LayerContainers, SequentialAppliesInOrderAndListsParameters) {
  Generator gen(3);
  nn::Sequential seq;
  auto fc = seq.push_back(std::make_shared<nn::Linear>(8, 8, true, gen));
  auto ln = seq.push_back(std::make_shared<nn::LayerNorm>(8));
  model::FfnOptions o = small_options(model::RouterKind::topk, 1, false);
  auto ffn = seq.push_back(std::make_shared<model::MoEFFN>(o, gen));
  EXPECT_EQ(seq.size(), 3u);
  const Tensor x = randn_t({4, 8}, 1, DType::f32);
  EXPECT_EQ(max_abs_diff(seq.forward(x), ffn->forward(ln->forward(fc->forward(x)))), 0.0);
  const auto names = seq.named_parameters();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front().first, "0.weight");
  EXPECT_EQ(names.back().first, "2.router.weight");
  EXPECT_HMOE_ERROR((void)nn::ModuleList()[0], "index 0 out of range");
}

// The README's example ("Using the engine from C++"), as it stands there.
TEST(LayerApi, ReadmeExample) {
  const auto dir = std::filesystem::temp_directory_path() / "hmoe_test_readme_example";
  std::filesystem::create_directories(dir);
  const std::string layer_file = (dir / "layer.safetensors").string(),
                    optim_file = (dir / "optim.safetensors").string();
  model::FfnOptions o;
  o.top_k = 2;
  Generator gen(0);
  auto layer = std::make_shared<model::HyperMoEFFN>(o, gen);
  optim::AdamW opt({{"decay", layer->parameters()}}, {.lr = 1e-3});
  Tensor x = normal({64, o.d_model}, gen);
  model::FfnStats stats;
  Tensor loss = sum(square(layer->forward(x, stats, gen))) + stats.aux_loss;
  loss.backward();
  opt.step();
  opt.zero_grad();
  io::save_safetensors(layer_file, layer->state_dict().items());
  opt.save(optim_file);
  layer->eval();
  Tensor y = layer->forward(x);
  EXPECT_EQ(y.shape(), x.shape());
  // Both files load back: the weights into a fresh layer, the state into its optimiser.
  Generator other(1);
  auto again = std::make_shared<model::HyperMoEFFN>(o, other);
  again->load_state_dict(io::load_safetensors(layer_file).tensors);
  optim::AdamW opt2({{"decay", again->parameters()}}, {.lr = 1e-3});
  opt2.load(optim_file);
  EXPECT_EQ(opt2.step_count(), 1);
  again->eval();
  EXPECT_EQ(max_abs_diff(again->forward(x), y), 0.0);
  std::filesystem::remove_all(dir);
}

TEST(Presets, FromTheApiAsTheConfigLoaderSetsThem) {
  for (const char* p : {"tiny", "small", "base"}) {
    SCOPED_TRACE(p);
    const model::ModelConfig a = model::preset(p);
    const model::ModelConfig b = train::load_config("", {std::string("model.preset=") + p}).model;
    EXPECT_EQ(a.n_layer, b.n_layer);
    EXPECT_EQ(a.d_model, b.d_model);
    EXPECT_EQ(a.n_head, b.n_head);
    EXPECT_EQ(a.d_ff, b.d_ff);
    EXPECT_EQ(a.block_size, b.block_size);
    EXPECT_EQ(a.adapter_rank, b.adapter_rank);
    EXPECT_EQ(a.preset, p);
  }
  EXPECT_EQ(model::preset("small").d_model, 256);
  const model::ModelConfig defaults, tiny = model::preset("tiny");
  EXPECT_EQ(tiny.n_layer, defaults.n_layer);
  EXPECT_EQ(tiny.d_model, defaults.d_model);
  EXPECT_EQ(tiny.d_ff, defaults.d_ff);
  EXPECT_EQ(tiny.adapter_rank, defaults.adapter_rank);
  EXPECT_HMOE_ERROR(model::preset("huge"), "unknown model preset 'huge'");
}

}  // namespace
