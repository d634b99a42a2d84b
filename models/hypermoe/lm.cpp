// The decoder LM: embeddings, pre-norm blocks, tied head; GPT-2 style initialisation
// (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)).
#include "models/hypermoe/lm.h"

#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/nn.h"

namespace hmoe::model {

CausalSelfAttention::CausalSelfAttention(int64_t d, int64_t n_head, int64_t n_layer, Generator& gen)
    : n_head_(n_head) {
  qkv_ = register_module("qkv", std::make_shared<nn::Linear>(d, 3 * d, true, gen));
  proj_ = register_module("proj", std::make_shared<nn::Linear>(d, d, true, gen));
  NoGradGuard ng;
  qkv_->weight.copy_(normal(qkv_->weight.shape(), gen, 0.0, 0.02));
  proj_->weight.copy_(normal(proj_->weight.shape(), gen, 0.0, 0.02 / std::sqrt(2.0 * double(n_layer))));
  qkv_->bias.zero_();
  proj_->bias.zero_();
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2), dh = d / n_head_;
  Tensor qkv = qkv_->forward(x).reshape({B, T, 3, n_head_, dh}).permute({2, 0, 3, 1, 4});  // [3, B, H, T, dh]
  const std::vector<Tensor> q_k_v = unbind(qkv, 0);
  Tensor y = causal_attention(q_k_v[0], q_k_v[1], q_k_v[2]);  // [B, H, T, dh]
  return proj_->forward(y.permute({0, 2, 1, 3}).reshape({B, T, d}));
}

Block::Block(const train::ModelConfig& cfg, int64_t layer, bool moe, std::shared_ptr<HyperNetwork> hyper,
             Generator& gen)
    : dropout_(cfg.dropout) {
  ln1_ = register_module("ln1", std::make_shared<nn::LayerNorm>(cfg.d_model));
  attn_ = register_module("attn", std::make_shared<CausalSelfAttention>(cfg.d_model, cfg.n_head, cfg.n_layer, gen));
  ln2_ = register_module("ln2", std::make_shared<nn::LayerNorm>(cfg.d_model));
  std::shared_ptr<FeedForward> ffn;
  if (!moe) ffn = std::make_shared<DenseFFN>(cfg.d_model, cfg.d_ff, cfg.n_layer, gen);
  else if (cfg.ffn == "moe") ffn = std::make_shared<MoEFFN>(cfg, gen);
  else ffn = std::make_shared<HyperMoEFFN>(cfg, layer, std::move(hyper), gen);
  ffn_ = register_module("ffn", ffn);
}

Tensor Block::forward(const Tensor& x, FfnStats& stats, Generator& noise) {
  const bool drop = is_training() && dropout_ > 0;
  Tensor a = attn_->forward(ln1_->forward(x));
  if (drop) a = dropout(a, dropout_, true, noise);
  Tensor h = x + a;
  const int64_t B = h.size(0), T = h.size(1), d = h.size(2);
  Tensor f = ffn_->forward(ln2_->forward(h).reshape({B * T, d}), stats, noise).reshape({B, T, d});
  if (drop) f = dropout(f, dropout_, true, noise);
  return h + f;
}

namespace {
bool layer_is_moe(const train::ModelConfig& cfg, int64_t i) {
  if (cfg.ffn == "dense") return false;
  return cfg.moe_every == 1 || i % 2 == 1;
}
}  // namespace

LanguageModel::LanguageModel(const train::ModelConfig& cfg, uint64_t seed) : cfg_(cfg) {
  train::validate(train::Config{cfg, train::DataConfig{}, train::OptimConfig{}});
  Generator gen(seed);
  wte_ = register_module("wte", std::make_shared<nn::Embedding>(cfg.vocab_size, cfg.d_model, gen));
  wpe_ = register_module("wpe", std::make_shared<nn::Embedding>(cfg.block_size, cfg.d_model, gen));
  {
    NoGradGuard ng;
    wte_->weight.copy_(normal(wte_->weight.shape(), gen, 0.0, 0.02));
    wpe_->weight.copy_(normal(wpe_->weight.shape(), gen, 0.0, 0.01));
  }
  int64_t n_moe = 0;
  for (int64_t i = 0; i < cfg.n_layer; ++i) n_moe += layer_is_moe(cfg, i);
  if (cfg.ffn == "hypermoe" && n_moe > 0)
    hyper_ = register_module("hyper", std::make_shared<HyperNetwork>(cfg, n_moe, gen));
  int64_t moe_index = 0;
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const bool moe = layer_is_moe(cfg, i);
    blocks_.push_back(register_module("blocks." + std::to_string(i),
                                      std::make_shared<Block>(cfg, moe ? moe_index : -1, moe, hyper_, gen)));
    moe_index += moe;
  }
  ln_f_ = register_module("ln_f", std::make_shared<nn::LayerNorm>(cfg.d_model));
}

LmOutput LanguageModel::forward(const Tensor& ids, Generator& noise) {
  HMOE_CHECK(ids.dim() == 2 && (ids.dtype() == DType::i64 || ids.dtype() == DType::i32),
             "LanguageModel: ids must be an integer [B, T] tensor, got ", ids.meta_str());
  const int64_t T = ids.size(1);
  HMOE_CHECK(T >= 1 && T <= cfg_.block_size, "LanguageModel: sequence length ", T, " is outside [1, block_size = ",
             cfg_.block_size, "]");
  Tensor pos = arange(T, {DType::i64, ids.device()});
  Tensor h = wte_->forward(ids) + wpe_->forward(pos);
  FfnStats stats;
  for (auto& b : blocks_) h = b->forward(h, stats, noise);
  h = ln_f_->forward(h);
  LmOutput out;
  out.logits = linear(h, wte_->weight);  // tied head: h W_te^T
  out.aux_loss = stats.aux_loss.defined() ? stats.aux_loss : zeros({}, {DType::f32, h.device()});
  out.expert_counts = std::move(stats.expert_counts);
  return out;
}

int64_t count_parameters(const train::ModelConfig& c) {
  auto linear = [](int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); };
  const int64_t d = c.d_model, f = c.d_ff, N = c.n_experts, r = c.adapter_rank, b = c.hyper_hidden;
  const int64_t norm = 2 * d;  // LayerNorm: weight and bias
  const int64_t attention = linear(d, 3 * d, true) + linear(d, d, true);
  const int64_t dense = linear(d, f, true) + linear(f, d, true);
  const int64_t router = linear(d, N, false) * (c.router == "topk" && c.noisy ? 2 : 1);
  const int64_t moe = router + N * (d * f + f + f * d + d);
  const int64_t hyper_layer = moe + N * c.expert_emb_dim + linear(c.expert_emb_dim, c.selection_hidden, true) +
                              linear(c.selection_hidden, c.hyper_in, true);
  int64_t n = c.vocab_size * d + c.block_size * d + norm, n_moe = 0;
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const bool is_moe = layer_is_moe(c, i);
    n_moe += is_moe;
    n += 2 * norm + attention + (!is_moe ? dense : c.ffn == "moe" ? moe : hyper_layer);
  }
  if (c.ffn == "hypermoe" && n_moe > 0)
    n += n_moe * c.layer_emb_dim + linear(c.hyper_in + c.layer_emb_dim, b, true) + linear(b, d * r, true) +
         linear(b, r * d, true) + linear(b, r, true) + linear(b, d, true);
  return n;
}

}  // namespace hmoe::model
