/// @file
/// The parameter shapes of each module of the language model, derived from its config in
/// one place: the constructors in ffn.cpp and lm.cpp register exactly these, and
/// count_parameters sums them without building the model (the base preset's weights
/// alone are 2 GB).
#pragma once

#include <initializer_list>
#include <optional>
#include <vector>

#include "engine/shape.h"
#include "models/hypermoe/config.h"
#include "models/nn/layers.h"

namespace hmoe::model {

/// The sum of parameter counts, checked (they come from configs; see checked_add).
inline int64_t sum_counts(std::initializer_list<int64_t> counts) {
  int64_t n = 0;
  for (int64_t c : counts) n = checked_add(n, c, "model: parameter count");
  return n;
}

/// The attention's parameter shapes.
struct AttentionShapes {
  /// @{
  /// The fused qkv projection and the output projection.
  nn::LinearShape qkv, proj;
  /// @}
  /// The parameter count.
  int64_t numel() const { return sum_counts({qkv.numel(), proj.numel()}); }
};

/// The dense FFN's parameter shapes.
struct DenseFfnShapes {
  /// @{
  /// The input and output projections.
  nn::LinearShape fc, proj;
  /// @}
  /// The parameter count.
  int64_t numel() const { return sum_counts({fc.numel(), proj.numel()}); }
};

/// An MoE layer's parameter shapes.
struct MoEShapes {
  nn::LinearShape router;                ///< the router's projection [d -> N]
  std::optional<nn::LinearShape> noise;  ///< the noisy top-k router's noise projection
  /// @{
  /// The experts' weights and biases: [N, d, d_ff], [N, d_ff], [N, d_ff, d], [N, d].
  Shape w1, b1, w2, b2;
  /// @}
  /// The parameter count.
  int64_t numel() const {
    return sum_counts({router.numel(), noise ? noise->numel() : 0, shape_numel(w1), shape_numel(b1), shape_numel(w2),
                       shape_numel(b2)});
  }
};

/// What a HyperMoE layer has beside its MoE: expert embeddings and the selection MLP.
struct HyperExpertShapes {
  Shape expert_emb;  ///< [N, expert_emb_dim]
  /// @{
  /// The selection MLP's two layers.
  nn::LinearShape sel1, sel2;
  /// @}
  /// The parameter count.
  int64_t numel() const { return sum_counts({shape_numel(expert_emb), sel1.numel(), sel2.numel()}); }
};

/// The hypernetwork shared by the HyperMoE layers.
struct HyperNetworkShapes {
  Shape layer_emb;  ///< [MoE layers, layer_emb_dim]
  /// @{
  /// The hidden layer and the four heads (adapter down / up weights and biases).
  nn::LinearShape wh, head_down, head_up, head_bdown, head_bup;
  /// @}
  /// The parameter count.
  int64_t numel() const {
    return sum_counts(
        {shape_numel(layer_emb), wh.numel(), head_down.numel(), head_up.numel(), head_bdown.numel(), head_bup.numel()});
  }
};

/// The language model's own parameter shapes and each block's FFN kind.
struct LmShapes {
  /// @{
  /// The token and position embeddings (the LM head is tied to wte).
  Shape wte, wpe;
  /// @}
  int64_t norm = 0;               ///< the width of every LayerNorm (weight and bias)
  std::vector<FfnKind> blocks;    ///< each block's FFN: the config's, or dense where moe_every skips one
  int64_t moe_layers() const;     ///< blocks with a MoE or HyperMoE FFN
  bool has_hypernetwork() const;  ///< some block is HyperMoE
};

/// Of each block's attention.
AttentionShapes attention_shapes(const ModelConfig& c);
/// Of a dense FFN.
DenseFfnShapes dense_ffn_shapes(const ModelConfig& c);
/// Of an MoE layer.
MoEShapes moe_shapes(const ModelConfig& c);
/// Of what a HyperMoE layer adds to its MoE layer.
HyperExpertShapes hyper_expert_shapes(const ModelConfig& c);
/// Of the hypernetwork, for n_moe_layers MoE layers.
HyperNetworkShapes hypernetwork_shapes(const ModelConfig& c, int64_t n_moe_layers);
/// Of the model outside its blocks.
LmShapes lm_shapes(const ModelConfig& c);

/// The parameter count of the model a config describes (a test checks it against built
/// models for every FFN kind and router).
int64_t count_parameters(const ModelConfig& c);

}  // namespace hmoe::model
