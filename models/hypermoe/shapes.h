// The parameter shapes of each module of the language model, derived from its config in
// one place: the constructors in ffn.cpp and lm.cpp register exactly these, and
// count_parameters sums them without building the model (the base preset's weights
// alone are 2 GB).
#pragma once

#include <initializer_list>
#include <optional>
#include <vector>

#include "engine/shape.h"
#include "models/hypermoe/config.h"
#include "models/nn/layers.h"

namespace hmoe::model {

// The sum of parameter counts, checked (they come from configs; see checked_add).
inline int64_t sum_counts(std::initializer_list<int64_t> counts) {
  int64_t n = 0;
  for (int64_t c : counts) n = checked_add(n, c, "model: parameter count");
  return n;
}

struct AttentionShapes {
  nn::LinearShape qkv, proj;
  int64_t numel() const { return sum_counts({qkv.numel(), proj.numel()}); }
};

struct DenseFfnShapes {
  nn::LinearShape fc, proj;
  int64_t numel() const { return sum_counts({fc.numel(), proj.numel()}); }
};

struct MoEShapes {
  nn::LinearShape router;
  std::optional<nn::LinearShape> noise;  // the noisy top-k router's noise projection
  Shape w1, b1, w2, b2;                  // the experts: [N, d, d_ff], [N, d_ff], [N, d_ff, d], [N, d]
  int64_t numel() const {
    return sum_counts({router.numel(), noise ? noise->numel() : 0, shape_numel(w1), shape_numel(b1), shape_numel(w2),
                       shape_numel(b2)});
  }
};

// What a HyperMoE layer has beside its MoE: expert embeddings and the selection MLP.
struct HyperExpertShapes {
  Shape expert_emb;  // [N, expert_emb_dim]
  nn::LinearShape sel1, sel2;
  int64_t numel() const { return sum_counts({shape_numel(expert_emb), sel1.numel(), sel2.numel()}); }
};

// The hypernetwork shared by the HyperMoE layers.
struct HyperNetworkShapes {
  Shape layer_emb;  // [MoE layers, layer_emb_dim]
  nn::LinearShape wh, head_down, head_up, head_bdown, head_bup;
  int64_t numel() const {
    return sum_counts(
        {shape_numel(layer_emb), wh.numel(), head_down.numel(), head_up.numel(), head_bdown.numel(), head_bup.numel()});
  }
};

struct LmShapes {
  Shape wte, wpe;                 // token and position embeddings (the LM head is tied to wte)
  int64_t norm = 0;               // the width of every LayerNorm (weight and bias)
  std::vector<FfnKind> blocks;    // each block's FFN: the config's, or dense where moe_every skips one
  int64_t moe_layers() const;     // blocks with a MoE or HyperMoE FFN
  bool has_hypernetwork() const;  // some block is HyperMoE
};

AttentionShapes attention_shapes(const ModelConfig& c);
DenseFfnShapes dense_ffn_shapes(const ModelConfig& c);
MoEShapes moe_shapes(const ModelConfig& c);
HyperExpertShapes hyper_expert_shapes(const ModelConfig& c);
HyperNetworkShapes hypernetwork_shapes(const ModelConfig& c, int64_t n_moe_layers);
LmShapes lm_shapes(const ModelConfig& c);

// The parameter count of the model a config describes (a test checks it against built
// models for every FFN kind and router).
int64_t count_parameters(const ModelConfig& c);

}  // namespace hmoe::model
