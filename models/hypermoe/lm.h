/// @file
/// The GPT-style decoder language model: token and learned position embeddings,
/// pre-norm blocks (causal self-attention + an FFN that is dense, MoE or HyperMoE per
/// the config), a final norm and an LM head tied to the token embedding; and its
/// incremental eval forward over a key/value cache (models/infer drives it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "models/hypermoe/config.h"
#include "models/hypermoe/ffn.h"
#include "models/nn/layers.h"
#include "models/nn/module.h"
#include "models/nn/parallel.h"

namespace hmoe::model {

/// What incremental decoding keeps of the tokens a batch has seen (inference only): per
/// block, keys and values [B, H, capacity, dh] in the activations' dtype, slot s holding
/// the token at position s. Slots hold finite values from the start (zeros), so a masked
/// slot's weight of exactly 0 never meets a NaN.
struct KvCache {
  /// @{
  /// Per block: keys and values [B, H, capacity, dh].
  std::vector<Tensor> k, v;
  /// @}
  /// The slots per row.
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
  /// Rows [first, first + n) as views: a forward through them writes into this cache.
  KvCache rows(int64_t first, int64_t n) const;
};

/// Multi-head causal self-attention with a fused qkv projection.
class CausalSelfAttention : public nn::Module {
 public:
  /// qkv [d -> 3d] and proj [d -> d] of a model of cfg.
  CausalSelfAttention(const ModelConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x);  ///< [B, T, d]
  /// x [B, T, d], eval without autograd: row b's T new keys and values fill slots start[b]
  /// to start[b] + T - 1 of k_cache, v_cache (this block's [B, H, capacity, dh]), and its
  /// query t attends to slots 0 to start[b] + t.
  Tensor forward_cached(const Tensor& x, const std::vector<int64_t>& start, const Tensor& k_cache,
                        const Tensor& v_cache);

 private:
  int64_t n_head_;
  std::shared_ptr<nn::Linear> qkv_, proj_;
};

/// A pre-norm transformer block: h = x + attn(ln1(x)), then h + ffn(ln2(h)).
class Block : public nn::Module {
 public:
  /// moe_layer: the block's index among the MoE blocks (HyperMoE's layer embedding).
  Block(const ModelConfig& cfg, FfnKind ffn, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper, Generator& gen,
        const nn::Parallel& par = {});
  /// x [B, T, d] -> [B, T, d]; adds the FFN's aux loss and routing counts to `stats`.
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise);
  /// The eval forward with attention through this block's part of the cache.
  Tensor forward_cached(const Tensor& x, const std::vector<int64_t>& start, const Tensor& k_cache,
                        const Tensor& v_cache, FfnStats& stats, Generator& noise);
  /// The block's FFN.
  const FeedForward& ffn() const { return *ffn_; }

 private:
  std::shared_ptr<nn::LayerNorm> ln1_, ln2_;
  std::shared_ptr<CausalSelfAttention> attn_;
  std::shared_ptr<FeedForward> ffn_;
  double dropout_;
  nn::Parallel par_;
};

/// What LanguageModel::forward returns.
struct LmOutput {
  Tensor logits;                                    ///< [B, T, V]
  Tensor aux_loss;                                  ///< 0-d, sum over MoE layers (already weighted), f32
  std::vector<std::vector<int64_t>> expert_counts;  ///< per MoE layer, tokens per expert
};

/// The GPT-style language model (see the file's description).
class LanguageModel : public nn::Module {
 public:
  /// With `par`, the model is one rank's part of a model spread over processes (see
  /// nn::Parallel): every parameter is built with the values one process builds, and its
  /// MoE layers hold this rank's experts.
  LanguageModel(const ModelConfig& cfg, uint64_t seed, const nn::Parallel& par = {});
  /// ids: i64 [B, T] with T <= block_size. `noise` draws router noise and dropout; in a
  /// world of W ranks each holds B of the batch's W * B sequences (rank r: from r * B on)
  /// and draws the values one process draws for them.
  LmOutput forward(const Tensor& ids, Generator& noise);
  /// An empty cache for `batch` rows of `capacity` slots on the model's device.
  KvCache make_cache(int64_t batch, int64_t capacity) const;
  /// Incremental eval forward (call in eval mode, under NoGradGuard): ids [B, T] at
  /// positions pos (i64 [B, T], each < block_size) fill cache slots start[b] .. start[b] +
  /// T - 1 of row b and attend as CausalSelfAttention::forward_cached says; returns the
  /// logits [B, V] of row b's token at index at[b] (0 <= at[b] < T). Reads the parameters
  /// only (and fills HyperMoE layers' adapter caches, which lock), so several threads may
  /// run it at once, each on its own cache.
  Tensor forward_cached(const Tensor& ids, const Tensor& pos, const std::vector<int64_t>& start, KvCache& cache,
                        const std::vector<int64_t>& at);
  /// The same in eval (no router noise, jitter or dropout drawn); in training an
  /// hmoe::Error when the model would draw any (pass a Generator, or call eval()).
  LmOutput forward(const Tensor& ids);
  /// The model's configuration.
  const ModelConfig& config() const { return cfg_; }
  /// How the model is spread over processes.
  const nn::Parallel& parallel() const { return par_; }

 private:
  ModelConfig cfg_;
  nn::Parallel par_;
  std::shared_ptr<nn::Embedding> wte_, wpe_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<nn::LayerNorm> ln_f_;
  std::shared_ptr<HyperNetwork> hyper_;  ///< shared by all HyperMoE layers (null otherwise)
};

}  // namespace hmoe::model
