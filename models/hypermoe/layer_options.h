/// @file
/// FfnOptions: one feed-forward layer's settings (sizes, router, HyperMoE sizes, init),
/// to build a layer on its own, apart from a language model; and what the language model
/// builds each of its layers with (ffn_options of its ModelConfig).
#pragma once

#include <cstdint>
#include <optional>

#include "models/hypermoe/config.h"

namespace hmoe::model {

/// The settings FfnOptions shares with ModelConfig (same names, same meanings; see
/// config.h): one list, so the two conversions below cannot drift apart.
#define HMOE_FFN_SHARED_FIELDS(X)                                                                                    \
  X(d_model)                                                                                                         \
  X(d_ff)                                                                                                            \
  X(n_experts) X(top_k) X(router) X(renormalize) X(noisy) X(capacity_factor) X(jitter) X(aux_cv_coef) X(aux_lb_coef) \
      X(aux_z_coef) X(expert_recompute) X(expert_emb_dim) X(selection_hidden) X(hyper_in) X(hyper_hidden)            \
          X(layer_emb_dim) X(adapter_rank)

/// One feed-forward layer's settings (ModelConfig's meanings), to build DenseFFN, MoEFFN or
/// HyperMoEFFN on its own.
struct FfnOptions {
  /// @{
  /// Model width and each expert's (or the dense FFN's) hidden width.
  int64_t d_model = 128, d_ff = 512;
  /// @}
  // MoE (ignored by DenseFFN)
  /// @{
  /// N experts, each token routed to top_k of them.
  int64_t n_experts = 8, top_k = 1;
  /// @}
  RouterKind router = RouterKind::topk;  ///< the router kind
  std::optional<bool> renormalize;       ///< unset: off for k = 1, on otherwise
  bool noisy = true;                     ///< the top-k router's learned noise, in training only
  double capacity_factor = 0.0;          ///< 0: dropless
  double jitter = 0.0;                   ///< the switch router's input jitter, in training only
  /// @{
  /// Coefficients of the auxiliary losses: cv^2 importance + load, Switch load balancing, router z-loss.
  double aux_cv_coef = 0.01, aux_lb_coef = 0.0, aux_z_coef = 0.0;
  /// @}
  bool expert_recompute = false;  ///< as ModelConfig::expert_recompute
  // HyperMoE (ignored by the others)
  /// @{
  /// HyperMoE sizes (as ModelConfig's).
  int64_t expert_emb_dim = 128, selection_hidden = 128, hyper_in = 128, hyper_hidden = 128, layer_emb_dim = 10;
  /// @}
  int64_t adapter_rank = 16;  ///< the HyperExpert adapter's bottleneck r

  /// Initialisation. Nothing here reads a layer count: the input projections (the dense
  /// fc, the experts' w1) draw N(0, init_std), the output projections (the dense proj, the
  /// experts' w2) N(0, out_init_std), biases start at zero. A model of L blocks scales
  /// the output projections by 1 / sqrt(2 L) (GPT-2's residual scaling): ffn_options does.
  double init_std = 0.02, out_init_std = 0.02;  ///< out_init_std: the output projections' std (see above)
  /// The router's weights draw N(0, router_init_std); 0 makes them zero, as the reference
  /// HyperMoE and the language model start. Zero weights give every expert the same
  /// logit and top-k then takes the lowest ids: with no router noise (noisy off, the
  /// switch router, or eval) every token goes to experts 0..k-1 until training moves the
  /// router. A layer built on its own starts small and random so that its tokens spread
  /// over the experts from the first step. The noisy router's noise weights start at zero
  /// either way (a noise std of softplus(0) + 0.01 per expert in training).
  double router_init_std = 0.02;
};

/// What the language model builds each FFN layer of `c` with: the shared fields, init_std
/// 0.02, out_init_std 0.02 / sqrt(2 n_layer), router_init_std 0.
FfnOptions ffn_options(const ModelConfig& c);
/// A one-layer ModelConfig carrying o's shared fields (what the layers' shape functions
/// and router read), checked with validate(): bad options are an hmoe::Error naming them.
ModelConfig layer_config(const FfnOptions& o);

}  // namespace hmoe::model
