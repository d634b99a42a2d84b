// The GPT-style decoder language model: token and learned position embeddings,
// pre-norm blocks (causal self-attention + an FFN that is dense, MoE or HyperMoE per
// the config), a final norm and an LM head tied to the token embedding.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "models/hypermoe/config.h"
#include "models/hypermoe/ffn.h"
#include "models/nn/layers.h"
#include "models/nn/module.h"

namespace hmoe::model {

class CausalSelfAttention : public nn::Module {
 public:
  CausalSelfAttention(const ModelConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x);  // [B, T, d]

 private:
  int64_t n_head_;
  std::shared_ptr<nn::Linear> qkv_, proj_;
};

class Block : public nn::Module {
 public:
  // moe_layer: the block's index among the MoE blocks (HyperMoE's layer embedding).
  Block(const ModelConfig& cfg, FfnKind ffn, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper, Generator& gen);
  // Adds the FFN's aux loss and routing counts to `out`.
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise);

 private:
  std::shared_ptr<nn::LayerNorm> ln1_, ln2_;
  std::shared_ptr<CausalSelfAttention> attn_;
  std::shared_ptr<FeedForward> ffn_;
  double dropout_;
};

struct LmOutput {
  Tensor logits;    // [B, T, V]
  Tensor aux_loss;  // 0-d, sum over MoE layers (already weighted), f32
  std::vector<std::vector<int64_t>> expert_counts;  // per MoE layer, tokens per expert
};

class LanguageModel : public nn::Module {
 public:
  LanguageModel(const ModelConfig& cfg, uint64_t seed);
  // ids: i64 [B, T] with T <= block_size. `noise` draws router noise and dropout.
  LmOutput forward(const Tensor& ids, Generator& noise);
  const ModelConfig& config() const { return cfg_; }

 private:
  ModelConfig cfg_;
  std::shared_ptr<nn::Embedding> wte_, wpe_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<nn::LayerNorm> ln_f_;
  std::shared_ptr<HyperNetwork> hyper_;  // shared by all HyperMoE layers (null otherwise)
};

}  // namespace hmoe::model
