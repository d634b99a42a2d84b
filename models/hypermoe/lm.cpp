// The decoder LM: embeddings, pre-norm blocks, tied head; GPT-2 style initialisation
// (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)).
#include "models/hypermoe/lm.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

namespace {

// Writes new keys (or values) t [B, H, T, dh] into slots start[b] .. of a cache block.
void write_slots(const Tensor& cache, const Tensor& t, const std::vector<int64_t>& start) {
  const int64_t T = t.size(2);
  if (std::all_of(start.begin(), start.end(), [&](int64_t s) { return s == start[0]; })) {
    cache.narrow(2, start[0], T).copy_(t);
    return;
  }
  for (size_t b = 0; b < start.size(); ++b)
    cache.select(0, int64_t(b)).narrow(1, start[b], T).copy_(t.select(0, int64_t(b)));
}

// q [B, H, T, dh] over the cached slots, row b's query t seeing slots <= start[b] + t:
// softmax(q k^T / sqrt(dh), masked) v over the first max(start) + T slots.
Tensor cached_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const std::vector<int64_t>& start) {
  const int64_t B = q.size(0), T = q.size(2), dh = q.size(3);
  const auto [lo, hi] = std::minmax_element(start.begin(), start.end());
  const int64_t S = *hi + T;
  const Tensor k = k_cache.narrow(2, 0, S), v = v_cache.narrow(2, 0, S);
  Tensor scores = matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(double(dh)));  // [B, H, T, S]
  if (S - 1 > *lo) {  // some row's query would see a slot past its own tokens
    std::vector<int32_t> hide(size_t(B * T * S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t s = 0; s < S; ++s) hide[size_t((b * T + t) * S + s)] = s > start[size_t(b)] + t;
    const Tensor mask = from_vector(hide, {B, 1, T, S}, {DType::b8, q.device()});
    scores = masked_fill(scores, mask, -std::numeric_limits<double>::infinity());
  }
  return matmul(softmax(scores, -1), v);
}

}  // namespace

Tensor CausalSelfAttention::forward_cached(const Tensor& x, const std::vector<int64_t>& start, const Tensor& k_cache,
                                           const Tensor& v_cache) {
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2), dh = d / n_head_;
  HMOE_CHECK(int64_t(start.size()) == B && k_cache.dim() == 4 && k_cache.size(0) == B,
             "CausalSelfAttention::forward_cached: ", start.size(), " row starts and cache ", k_cache.meta_str(),
             " for input ", x.meta_str());
  for (int64_t s : start)
    HMOE_CHECK(s >= 0 && s + T <= k_cache.size(2), "CausalSelfAttention::forward_cached: slots [", s, ", ", s + T,
               ") are outside the cache's ", k_cache.size(2));
  Tensor qkv = qkv_->forward(x).reshape({B, T, 3, n_head_, dh}).permute({2, 0, 3, 1, 4});  // [3, B, H, T, dh]
  const std::vector<Tensor> q_k_v = unbind(qkv, 0);
  write_slots(k_cache, q_k_v[1], start);
  write_slots(v_cache, q_k_v[2], start);
  // A batch starting at slot 0 is a plain causal prefill (rows right-padded: a real
  // token never sees a later pad): the fused kernel, as in training.
  const bool fresh = std::all_of(start.begin(), start.end(), [](int64_t s) { return s == 0; });
  Tensor y =
      fresh ? causal_attention(q_k_v[0], q_k_v[1], q_k_v[2]) : cached_attention(q_k_v[0], k_cache, v_cache, start);
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

Tensor Block::forward_cached(const Tensor& x, const std::vector<int64_t>& start, const Tensor& k_cache,
                             const Tensor& v_cache, FfnStats& stats, Generator& noise) {
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2);
  Tensor h = x + attn_->forward_cached(ln1_->forward(x), start, k_cache, v_cache);
  return h + ffn_->forward(ln2_->forward(h).reshape({B * T, d}), stats, noise).reshape({B, T, d});
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

KvCache KvCache::rows(int64_t first, int64_t n) const {
  KvCache r;
  for (size_t l = 0; l < k.size(); ++l) {
    r.k.push_back(k[l].narrow(0, first, n));
    r.v.push_back(v[l].narrow(0, first, n));
  }
  return r;
}

KvCache LanguageModel::make_cache(int64_t batch, int64_t capacity) const {
  HMOE_CHECK(batch >= 1 && capacity >= 1, "LanguageModel::make_cache: batch ", batch, " and capacity ", capacity,
             " must be >= 1");
  const Shape shape{batch, cfg_.n_head, capacity, cfg_.d_model / cfg_.n_head};
  KvCache c;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    c.k.push_back(zeros(shape, {wte_->weight.dtype(), wte_->weight.device()}));
    c.v.push_back(zeros(shape, {wte_->weight.dtype(), wte_->weight.device()}));
  }
  return c;
}

Tensor LanguageModel::forward_cached(const Tensor& ids, const Tensor& pos, const std::vector<int64_t>& start,
                                     KvCache& cache, const std::vector<int64_t>& at) {
  HMOE_CHECK(ids.dim() == 2 && pos.shape() == ids.shape() && cache.k.size() == blocks_.size() &&
                 int64_t(at.size()) == ids.size(0),
             "LanguageModel::forward_cached: ids ", ids.meta_str(), ", positions ", pos.meta_str(), ", ",
             cache.k.size(), " cache blocks for ", blocks_.size(), ", ", at.size(), " rows to read");
  HMOE_CHECK(!is_training(), "LanguageModel::forward_cached: inference only: put the model in eval mode first");
  const int64_t B = ids.size(0), T = ids.size(1), d = cfg_.d_model;
  Tensor h = wte_->forward(ids) + wpe_->forward(pos);
  FfnStats stats;
  Generator unused(0);  // router noise and dropout are training's
  for (size_t l = 0; l < blocks_.size(); ++l)
    h = blocks_[l]->forward_cached(h, start, cache.k[l], cache.v[l], stats, unused);
  std::vector<int64_t> rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    HMOE_CHECK(at[size_t(b)] >= 0 && at[size_t(b)] < T, "LanguageModel::forward_cached: row ", b, " reads token ",
               at[size_t(b)], " of ", T);
    rows[size_t(b)] = b * T + at[size_t(b)];
  }
  // The final norm is per token, so norming only the rows read changes nothing.
  h = ln_f_->forward(index_select(h.reshape({B * T, d}), 0, from_vector(rows, {B}).to(h.device())));
  return linear(h, wte_->weight);
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
