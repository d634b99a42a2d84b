// Modules: hierarchical names, registration order, modes, state-dict round trips
// and strict loading errors; layers against the ops they wrap.
#include "models/nn/layers.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {
class Net : public nn::Module {
 public:
  explicit Net(Generator& g) {
    blocks.push_back(register_module("blocks.0", std::make_shared<nn::MLP>(4, 8, 4, g)));
    blocks.push_back(register_module("blocks.1", std::make_shared<nn::MLP>(4, 8, 4, g)));
    ln = register_module("ln", std::make_shared<nn::LayerNorm>(4));
    scale = register_buffer("scale", full({1}, 2.0));
  }
  Tensor forward(const Tensor& x) { return ln->forward(blocks[1]->forward(blocks[0]->forward(x))) * scale; }
  std::vector<std::shared_ptr<nn::MLP>> blocks;
  std::shared_ptr<nn::LayerNorm> ln;
  Tensor scale;
};
}  // namespace

TEST(Modules, NamesOrderModesAndCounts) {
  Generator g(1);
  Net net(g);
  auto named = net.named_parameters();
  ASSERT_EQ(named.size(), 10u);
  EXPECT_EQ(named[0].first, "blocks.0.fc.weight");
  EXPECT_EQ(named[3].first, "blocks.0.proj.bias");
  EXPECT_EQ(named[9].first, "ln.bias");
  EXPECT_EQ(net.num_parameters(), 2 * (4 * 8 + 8 + 8 * 4 + 4) + 8);
  EXPECT_EQ(net.state_dict().size(), 11u);  // + the buffer
  net.eval();
  EXPECT_FALSE(net.blocks[1]->fc->is_training());
  net.train();
  EXPECT_TRUE(net.ln->is_training());
  for (auto& [n, p] : named) EXPECT_TRUE(p.requires_grad()) << n;
}

TEST(Modules, StateDictRoundTripAndStrictErrors) {
  Generator g1(1), g2(2);
  Net a(g1), b(g2);
  Tensor x = rand_t({3, 4}, 5, -1, 1, DType::f32);
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : a.state_dict()) sd[n] = t.detach().clone();
  EXPECT_GT(max_abs_diff(a.forward(x), b.forward(x)), 1e-3);
  b.load_state_dict(sd);
  expect_close(a.forward(x), b.forward(x), 0);
  auto missing = sd;
  missing.erase("ln.weight");
  EXPECT_HMOE_ERROR(b.load_state_dict(missing), "missing key 'ln.weight'");
  auto extra = sd;
  extra["ln.gamma"] = ones({4});
  EXPECT_HMOE_ERROR(b.load_state_dict(extra), "unexpected key 'ln.gamma'");
  auto bad = sd;
  bad["ln.weight"] = ones({5});
  EXPECT_HMOE_ERROR(b.load_state_dict(bad), "shape");
  bad["ln.weight"] = ones({4}, {DType::f64});
  EXPECT_HMOE_ERROR(b.load_state_dict(bad), "dtype");
}

// state_dict() and load_state_dict() take one type: a module's dict loads into another
// as it is; its order is registration order; names are unique and looked up.
TEST(Modules, StateDictIsOneOrderedType) {
  Generator g1(1), g2(2);
  Net a(g1), b(g2);
  const nn::StateDict sd = a.state_dict();
  // A module's own parameters and buffers, then its children's, in registration order.
  EXPECT_EQ(sd.items()[0].first, "scale");
  EXPECT_EQ(sd.items()[1].first, "blocks.0.fc.weight");
  EXPECT_EQ(sd.items().back().first, "ln.bias");
  b.load_state_dict(a.state_dict());
  const Tensor x = rand_t({3, 4}, 5, -1, 1, DType::f32);
  expect_close(a.forward(x), b.forward(x), 0);
  EXPECT_TRUE(sd.contains("ln.weight"));
  EXPECT_TRUE(sd.at("ln.weight").is_same(a.ln->weight));
  EXPECT_EQ(sd.find("nothing"), nullptr);
  EXPECT_HMOE_ERROR(sd.at("nothing"), "no tensor named 'nothing'");
  nn::StateDict d;
  d.insert("w", ones({1}));
  EXPECT_HMOE_ERROR(d.insert("w", ones({1})), "'w' is there twice");
}

TEST(Modules, LayersMatchOps) {
  Generator g(3);
  nn::Linear lin(5, 3, true, g);
  Tensor x = rand_t({2, 5}, 1, -1, 1, DType::f32);
  expect_close(lin.forward(x), matmul(x, lin.weight.t()) + lin.bias, 1e-6);
  for (double w : lin.weight.to_vector()) EXPECT_LE(std::abs(w), 1 / std::sqrt(5.0));
  nn::Embedding emb(7, 2, g);
  expect_close(emb.forward(from_vector(std::vector<int64_t>{6}, {1})), emb.weight.narrow(0, 6, 1), 0);
  nn::RMSNorm rms(5);
  expect_close(rms.forward(x), rms_norm(x, ones({5})), 0);
  EXPECT_HMOE_ERROR(nn::Linear(0, 3, true, g), "positive");
}

// to(dtype) casts in place: the module's fields and its parameter list are the same
// tensors before and after, gradients are dropped, requires_grad is kept.
TEST(Modules, ToDtypeKeepsIdentity) {
  Generator gen(3);
  nn::MLP m(4, 8, 2, gen);
  const Tensor w = m.fc->weight;
  const Tensor before = w.clone();
  sum(m.forward(rand_t({3, 4}, 1, -1, 1, DType::f32))).backward();
  ASSERT_TRUE(w.grad().defined());
  m.to(DType::bf16);
  EXPECT_EQ(m.dtype(), DType::bf16);
  EXPECT_TRUE(w.is_same(m.fc->weight));
  EXPECT_EQ(w.dtype(), DType::bf16);
  EXPECT_TRUE(w.requires_grad());
  EXPECT_FALSE(w.grad().defined());
  for (const auto& [n, p] : m.named_parameters()) EXPECT_EQ(p.dtype(), DType::bf16) << n;
  expect_close(w.to(DType::f64), before.to(DType::bf16).to(DType::f64), 0);
  EXPECT_EQ(m.device(), Device::cpu());
  m.to(Device::cpu());  // already there: a no-op
  EXPECT_TRUE(w.is_same(m.fc->weight));
  EXPECT_HMOE_ERROR(m.to(DType::i32), "floating dtype");
}
