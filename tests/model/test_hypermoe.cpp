// HyperMoE layers and the LM: the pattern-grouped HyperExpert equals the per-token
// formulation of the reference (forward and every gradient) for k = 1 and k = 2;
// the initialisation follows the spec; the LM runs for every FFN kind.
#include "models/hypermoe/lm.h"
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {
train::ModelConfig small_cfg(int64_t k) {
  train::ModelConfig c;
  c.n_layer = 2;
  c.d_model = 16;
  c.n_head = 2;
  c.d_ff = 24;
  c.block_size = 8;
  c.vocab_size = 32;
  c.n_experts = 5;
  c.top_k = k;
  c.expert_emb_dim = 6;
  c.selection_hidden = 7;
  c.hyper_in = 5;
  c.hyper_hidden = 9;
  c.layer_emb_dim = 3;
  c.adapter_rank = 4;
  return c;
}

// Grads of every parameter of `m` (and of x) after backward of sum(y * w).
std::vector<Tensor> grads_of(nn::Module& m, const Tensor& x) {
  std::vector<Tensor> g;
  for (auto& [n, p] : m.named_parameters()) g.push_back(p.grad().defined() ? p.grad() : zeros_like(p));
  g.push_back(x.grad());
  return g;
}
}  // namespace

class HyperExpertEquivalence : public ::testing::TestWithParam<int64_t> {};

TEST_P(HyperExpertEquivalence, GroupedMatchesPerTokenForwardAndGradients) {
  const int64_t k = GetParam();
  train::ModelConfig cfg = small_cfg(k);
  Generator gen(3);
  auto hyper = std::make_shared<model::HyperNetwork>(cfg, 2, gen);
  model::HyperMoEFFN ffn(cfg, 1, hyper, gen);
  // Make the hypernetwork's heads large enough that the adapters matter numerically.
  {
    NoGradGuard ng;
    for (auto& [n, p] : hyper->named_parameters()) p.copy_(normal(p.shape(), gen, 0.0, 0.3));
  }
  const int64_t T = 23;
  // Random selections with every pattern shape, including repeated ones.
  std::vector<int32_t> ids;
  Generator sel(9);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> chosen;
    while (int64_t(chosen.size()) < k) {
      const int32_t e = int32_t(philox_uniform(9, sel.advance(1), 0) * float(cfg.n_experts)) % int32_t(cfg.n_experts);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    ids.insert(ids.end(), chosen.begin(), chosen.end());
  }
  Tensor expert_ids = from_vector(ids, {T, k});
  Tensor w = randn_t({T, cfg.d_model}, 5, DType::f32);

  Tensor x1 = randn_t({T, cfg.d_model}, 4, DType::f32, true);
  Tensor y1 = ffn.hyper_expert(x1, expert_ids);
  sum(y1 * w).backward();
  std::vector<Tensor> g1 = grads_of(ffn, x1);
  for (auto& [n, p] : ffn.named_parameters()) p.zero_grad();
  for (auto& [n, p] : hyper->named_parameters()) p.zero_grad();

  Tensor x2 = x1.detach().clone().set_requires_grad(true);
  Tensor y2 = ffn.hyper_expert_per_token(x2, expert_ids);
  sum(y2 * w).backward();
  std::vector<Tensor> g2 = grads_of(ffn, x2);

  EXPECT_GT(max_abs_diff(y1, zeros_like(y1)), 1e-3);  // the branch is not trivially zero
  expect_close(y1, y2, 2e-5);
  ASSERT_EQ(g1.size(), g2.size());
  const auto names = ffn.named_parameters();
  for (size_t i = 0; i < g1.size(); ++i) {
    SCOPED_TRACE(i < names.size() ? names[i].first : "x");
    const double scale = 1 + max_abs_diff(g2[i], zeros_like(g2[i]));
    EXPECT_LE(max_abs_diff(g1[i], g2[i]), 2e-5 * scale);
  }
}

INSTANTIATE_TEST_SUITE_P(TopK, HyperExpertEquivalence, ::testing::Values(1, 2));

TEST(HyperNetwork, HyperfaninInitStartsNearZero) {
  train::ModelConfig cfg = small_cfg(1);
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
      train::ModelConfig cfg = small_cfg(k);
      cfg.ffn = ffn;
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
