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
#include "models/nn/parallel.h"

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
  Block(const ModelConfig& cfg, FfnKind ffn, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper, Generator& gen,
        const nn::Parallel& par = {});
  // Adds the FFN's aux loss and routing counts to `out`.
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise);
  const FeedForward& ffn() const { return *ffn_; }

 private:
  std::shared_ptr<nn::LayerNorm> ln1_, ln2_;
  std::shared_ptr<CausalSelfAttention> attn_;
  std::shared_ptr<FeedForward> ffn_;
  double dropout_;
  nn::Parallel par_;
};

struct LmOutput {
  Tensor logits;    // [B, T, V]
  Tensor aux_loss;  // 0-d, sum over MoE layers (already weighted), f32
  std::vector<std::vector<int64_t>> expert_counts;  // per MoE layer, tokens per expert
};

class LanguageModel : public nn::Module {
 public:
  // With `par`, the model is one rank's part of a model spread over processes (see
  // nn::Parallel): every parameter is built with the values one process builds, and its
  // MoE layers hold this rank's experts.
  LanguageModel(const ModelConfig& cfg, uint64_t seed, const nn::Parallel& par = {});
  // ids: i64 [B, T] with T <= block_size. `noise` draws router noise and dropout; in a
  // world of W ranks each holds B of the batch's W * B sequences (rank r: from r * B on)
  // and draws the values one process draws for them.
  LmOutput forward(const Tensor& ids, Generator& noise);
  // The same in eval (no router noise, jitter or dropout drawn); in training an
  // hmoe::Error when the model would draw any (pass a Generator, or call eval()).
  LmOutput forward(const Tensor& ids);
  const ModelConfig& config() const { return cfg_; }
  const nn::Parallel& parallel() const { return par_; }

 private:
  ModelConfig cfg_;
  nn::Parallel par_;
  std::shared_ptr<nn::Embedding> wte_, wpe_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<nn::LayerNorm> ln_f_;
  std::shared_ptr<HyperNetwork> hyper_;  // shared by all HyperMoE layers (null otherwise)
};

}  // namespace hmoe::model
