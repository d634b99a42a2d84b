// Small model configs the model tests share: a HyperMoE's side networks small enough for
// f64 references (expert embeddings 6, selection MLP 7 -> 5, hypernetwork 9, layer
// embeddings 3, adapter rank 4), on one layer's sizes or a small LM's.
#pragma once

#include <cstdint>

#include "models/hypermoe/config.h"

namespace hmoe::testing {

// One FFN layer: d_model 8, d_ff 12, in a model of 2 layers (its init scales read n_layer).
inline model::ModelConfig small_layer_config(int64_t n_experts, int64_t k) {
  model::ModelConfig c;
  c.n_layer = 2;
  c.d_model = 8;
  c.d_ff = 12;
  c.n_experts = n_experts;
  c.top_k = k;
  c.expert_emb_dim = 6;
  c.selection_hidden = 7;
  c.hyper_in = 5;
  c.hyper_hidden = 9;
  c.layer_emb_dim = 3;
  c.adapter_rank = 4;
  return c;
}

// A language model: 2 layers, d_model 16, 2 heads, d_ff 24, block 8, vocabulary 32.
inline model::ModelConfig small_lm_config(int64_t n_experts, int64_t k) {
  model::ModelConfig c = small_layer_config(n_experts, k);
  c.d_model = 16;
  c.n_head = 2;
  c.d_ff = 24;
  c.block_size = 8;
  c.vocab_size = 32;
  return c;
}

}  // namespace hmoe::testing
