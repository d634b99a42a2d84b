// HyperMoE layers and the LM: the pattern-grouped HyperExpert equals the per-token
// formulation of the reference (forward and every gradient, the shared hypernetwork's
// included, with two layers on it) for k = 1 and k = 2; the initialisation follows the
// spec; the LM runs for every FFN kind.
#include "models/hypermoe/lm.h"
#include "tests/support/model_util.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {
model::ModelConfig small_cfg(int64_t k) { return small_lm_config(5, k); }

// Every gradient the backward of sum(y * w) leaves: each parameter of `ms` (named, zeros
// when undefined) and x's.
using NamedGrads = std::vector<std::pair<std::string, Tensor>>;
NamedGrads grads_of(const std::vector<std::pair<std::string, nn::Module*>>& ms, const Tensor& x) {
  NamedGrads g;
  for (const auto& [prefix, m] : ms)
    for (auto& [n, p] : m->named_parameters())
      g.emplace_back(prefix + n, p.grad().defined() ? p.grad() : zeros_like(p));
  g.emplace_back("x", x.grad());
  return g;
}

// k distinct experts for each of T tokens, every pattern shape, repeats included.
Tensor random_selection(int64_t T, int64_t k, int64_t N, uint64_t seed) {
  std::vector<int32_t> ids;
  Generator sel(seed);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> chosen;
    while (int64_t(chosen.size()) < k) {
      const int32_t e = int32_t(philox_uniform(seed, sel.advance(1), 0) * float(N)) % int32_t(N);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    ids.insert(ids.end(), chosen.begin(), chosen.end());
  }
  return from_vector(ids, {T, k});
}
}  // namespace

class HyperExpertEquivalence : public ::testing::TestWithParam<int64_t> {};

// Two HyperMoE layers share one hypernetwork (as in the LM), so the gradients of the
// hypernetwork's parameters, each layer's row of the layer embedding included, are the
// sums over both layers; all of them are compared, not only the layers' own.
TEST_P(HyperExpertEquivalence, GroupedMatchesPerTokenForwardAndGradients) {
  const int64_t k = GetParam();
  model::ModelConfig cfg = small_cfg(k);
  Generator gen(3);
  auto hyper = std::make_shared<model::HyperNetwork>(cfg, 2, gen);
  model::HyperMoEFFN ffn0(cfg, 0, hyper, gen), ffn1(cfg, 1, hyper, gen);
  // Make the hypernetwork's heads large enough that the adapters matter numerically.
  {
    NoGradGuard ng;
    for (auto& [n, p] : hyper->named_parameters()) p.copy_(normal(p.shape(), gen, 0.0, 0.3));
  }
  const int64_t T = 23;
  const Tensor ids0 = random_selection(T, k, cfg.n_experts, 9), ids1 = random_selection(T, k, cfg.n_experts, 10);
  const Tensor w0 = randn_t({T, cfg.d_model}, 5, DType::f32), w1 = randn_t({T, cfg.d_model}, 6, DType::f32);
  const std::vector<std::pair<std::string, nn::Module*>> modules{
      {"layer0.", &ffn0}, {"layer1.", &ffn1}, {"hyper.", hyper.get()}};
  auto run = [&](const Tensor& x, bool grouped) {
    auto he = [&](model::HyperMoEFFN& f, const Tensor& ids) {
      return grouped ? f.hyper_expert(x, ids) : f.hyper_expert_per_token(x, ids);
    };
    const Tensor y0 = he(ffn0, ids0), y1 = he(ffn1, ids1);
    sum(y0 * w0 + y1 * w1).backward();
    return std::make_pair(cat({y0, y1}, 0), grads_of(modules, x));
  };

  Tensor x1 = randn_t({T, cfg.d_model}, 4, DType::f32, true);
  const auto [y1, g1] = run(x1, true);
  for (const auto& [p, m] : modules) m->zero_grad();
  const auto [y2, g2] = run(x1.detach().clone().set_requires_grad(true), false);

  EXPECT_GT(max_abs_diff(y1, zeros_like(y1)), 1e-3);  // the branch is not trivially zero
  expect_close(y1, y2, 2e-5);
  ASSERT_EQ(g1.size(), g2.size());
  int64_t hyper_grads = 0;
  Tensor emb_grad;
  for (size_t i = 0; i < g1.size(); ++i) {
    const auto& [name, g] = g1[i];
    SCOPED_TRACE(name);
    ASSERT_EQ(name, g2[i].first);
    const double scale = 1 + max_abs_diff(g2[i].second, zeros_like(g2[i].second));
    EXPECT_LE(max_abs_diff(g, g2[i].second), 2e-5 * scale);
    // Every parameter on the HyperExpert's path gets a gradient (the experts and the
    // router are not on it), so no comparison above is zeros against zeros.
    const bool on_path = name.find("hyper.") == 0 || name.find("expert_emb") != std::string::npos ||
                         name.find(".sel") != std::string::npos || name == "x";
    if (on_path) {
      EXPECT_GT(max_abs_diff(g, zeros_like(g)), 0.0);
    }
    hyper_grads += name.find("hyper.") == 0;
    if (name == "hyper.layer_emb") emb_grad = g;
  }
  EXPECT_EQ(hyper_grads, int64_t(hyper->named_parameters().size()));
  // Each layer's row of the shared layer embedding gets its own gradient.
  ASSERT_TRUE(emb_grad.defined());
  for (int64_t l = 0; l < 2; ++l) EXPECT_GT(max_abs_diff(emb_grad.select(0, l), zeros({cfg.layer_emb_dim})), 0.0) << l;
}

INSTANTIATE_TEST_SUITE_P(TopK, HyperExpertEquivalence, ::testing::Values(1, 2));

TEST(HyperNetwork, HyperfaninInitStartsNearZero) {
  model::ModelConfig cfg = small_cfg(1);
  cfg.d_model = 32;
  cfg.adapter_rank = 8;
  cfg.hyper_hidden = 16;
  Generator gen(1);
  model::HyperNetwork h(cfg, 2, gen);
  for (auto& [name, p] : h.named_parameters()) {
    if (name.find("head_") == 0 && name.find(".bias") != std::string::npos) {
      EXPECT_EQ(max_abs_diff(p, zeros_like(p)), 0.0) << name;
    }
    if (name == "head_up.weight") {
      EXPECT_LE(max_abs_diff(p, zeros_like(p)), 1e-3 * std::sqrt(3.0 / (16.0 * 8)) + 1e-9);
    }
    if (name == "head_down.weight") {
      EXPECT_LE(max_abs_diff(p, zeros_like(p)), 1e-3 * std::sqrt(3.0 / (16.0 * 32)) + 1e-9);
    }
  }
}

TEST(LanguageModel, EveryFfnKindRunsForwardAndBackward) {
  for (std::string ffn : {"dense", "moe", "hypermoe"}) {
    for (int64_t k : {1, 2}) {
      SCOPED_TRACE(ffn + " k=" + std::to_string(k));
      model::ModelConfig cfg = small_cfg(k);
      cfg.ffn = model::parse_ffn_kind(ffn);
      cfg.moe_every = 2;
      model::LanguageModel m(cfg, 11);
      m.train();
      Generator noise(2);
      Tensor ids = from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 6});
      model::LmOutput out = m.forward(ids, noise);
      EXPECT_EQ(out.logits.shape(), (Shape{2, 6, 32}));
      Tensor loss = cross_entropy(out.logits.reshape({-1, 32}), ids.reshape({-1})) + out.aux_loss;
      loss.backward();
      int64_t with_grad = 0;
      for (auto& [n, p] : m.named_parameters()) with_grad += p.grad().defined();
      EXPECT_GT(with_grad, 0);
      EXPECT_EQ(out.expert_counts.size(), ffn == "dense" ? 0u : 1u);
      EXPECT_HMOE_ERROR(m.forward(zeros({1, 9}, {DType::i64}), noise), "block_size");
    }
  }
}
