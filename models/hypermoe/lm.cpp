// The decoder LM: embeddings, pre-norm blocks, tied head; GPT-2 style initialisation
// (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)).
#include "models/hypermoe/lm.h"

#include <cmath>

#include "models/hypermoe/shapes.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/nn.h"

namespace hmoe::model {

CausalSelfAttention::CausalSelfAttention(const ModelConfig& cfg, Generator& gen) : n_head_(cfg.n_head) {
  const AttentionShapes s = attention_shapes(cfg);
  qkv_ = register_module("qkv", std::make_shared<nn::Linear>(s.qkv, gen));
  proj_ = register_module("proj", std::make_shared<nn::Linear>(s.proj, gen));
  NoGradGuard ng;
  qkv_->weight.copy_(normal(qkv_->weight.shape(), gen, 0.0, 0.02));
  proj_->weight.copy_(normal(proj_->weight.shape(), gen, 0.0, 0.02 / std::sqrt(2.0 * double(cfg.n_layer))));
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

Block::Block(const ModelConfig& cfg, FfnKind ffn, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper,
             Generator& gen, const nn::Parallel& par)
    : dropout_(cfg.dropout), par_(par) {
  const int64_t norm = lm_shapes(cfg).norm;
  ln1_ = register_module("ln1", std::make_shared<nn::LayerNorm>(norm));
  attn_ = register_module("attn", std::make_shared<CausalSelfAttention>(cfg, gen));
  ln2_ = register_module("ln2", std::make_shared<nn::LayerNorm>(norm));
  switch (ffn) {
    case FfnKind::dense:
      ffn_ = std::make_shared<DenseFFN>(cfg, gen);
      break;
    case FfnKind::moe:
      ffn_ = std::make_shared<MoEFFN>(cfg, gen, par);
      break;
    case FfnKind::hypermoe:
      ffn_ = std::make_shared<HyperMoEFFN>(cfg, moe_layer, std::move(hyper), gen, par);
      break;
  }
  register_module("ffn", ffn_);
}

Tensor Block::forward(const Tensor& x, FfnStats& stats, Generator& noise) {
  const bool drop = is_training() && dropout_ > 0;
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2);
  // This rank's sequences' masks of the whole batch's draw.
  auto drop_rows = [&](const Tensor& t) {
    Generator g = noise.take_rows(uint64_t(par_.world_rank() * B), uint64_t(T * d), uint64_t(par_.world_size() * B));
    return dropout(t, dropout_, true, g);
  };
  Tensor a = attn_->forward(ln1_->forward(x));
  if (drop) a = drop_rows(a);
  Tensor h = x + a;
  Tensor f = ffn_->forward(ln2_->forward(h).reshape({B * T, d}), stats, noise).reshape({B, T, d});
  if (drop) f = drop_rows(f);
  return h + f;
}

LanguageModel::LanguageModel(const ModelConfig& cfg, uint64_t seed, const nn::Parallel& par) : cfg_(cfg), par_(par) {
  validate(cfg);
  HMOE_CHECK(cfg.vocab_size >= 1, "LanguageModel: model.vocab_size is 0 (\"from the data\"): set it before building");
  const LmShapes s = lm_shapes(cfg);
  Generator gen(seed);
  wte_ = register_module("wte", std::make_shared<nn::Embedding>(s.wte[0], s.wte[1], gen));
  wpe_ = register_module("wpe", std::make_shared<nn::Embedding>(s.wpe[0], s.wpe[1], gen));
  {
    NoGradGuard ng;
    wte_->weight.copy_(normal(wte_->weight.shape(), gen, 0.0, 0.02));
    wpe_->weight.copy_(normal(wpe_->weight.shape(), gen, 0.0, 0.01));
  }
  if (s.has_hypernetwork()) hyper_ = register_module("hyper", std::make_shared<HyperNetwork>(cfg, s.moe_layers(), gen));
  int64_t moe_index = 0;
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const bool moe = s.blocks[i] != FfnKind::dense;
    blocks_.push_back(register_module("blocks." + std::to_string(i),
                                      std::make_shared<Block>(cfg, s.blocks[i], moe ? moe_index : -1, hyper_, gen, par)));
    moe_index += moe;
  }
  ln_f_ = register_module("ln_f", std::make_shared<nn::LayerNorm>(s.norm));
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

LmOutput LanguageModel::forward(const Tensor& ids) {
  bool draws = is_training() && cfg_.dropout > 0;
  for (const auto& b : blocks_) draws = draws || b->ffn().draws_noise();
  HMOE_CHECK(!draws, "LanguageModel::forward: the model draws router noise, jitter or dropout in training: pass a ",
             "Generator, or call eval()");
  Generator unused(0);  // nothing is drawn from it (checked above)
  return forward(ids, unused);
}

}  // namespace hmoe::model
