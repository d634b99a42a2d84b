/// @file
/// The language model's configuration (the [model] section of a training config): sizes,
/// the FFN kind, the router and its losses, precision and the HyperMoE settings, with the
/// kinds as enums and their names as config files write them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/dtype.h"

namespace hmoe::model {

/// The feed-forward sub-layer of the MoE blocks: dense, MoE, or HyperMoE.
enum class FfnKind : uint8_t { dense, moe, hypermoe };
/// topk: softmax top-k, noisy in training when ModelConfig::noisy; switch_: Switch top-1.
enum class RouterKind : uint8_t { topk, switch_ };

/// The language model: a GPT-style decoder whose FFN is dense, MoE or HyperMoE.
struct ModelConfig {
  std::string preset = "tiny";      ///< tiny | small | base: defaults for the sizes below
  FfnKind ffn = FfnKind::hypermoe;  ///< the FFN of the MoE blocks
  int64_t moe_every = 1;            ///< 1: every block's FFN is MoE; 2: every other block
  /// @{
  /// Layers, model width, attention heads, FFN width, context length (tokens).
  int64_t n_layer = 4, d_model = 128, n_head = 4, d_ff = 512, block_size = 128;
  /// @}
  /// A training config's default is 0: the data's (256 for text, the largest token id + 1
  /// for token files); a model is built with it set.
  int64_t vocab_size = 256;
  double dropout = 0.0;      ///< dropout probability of each block's attention and FFN outputs, in training only
  DType dtype = DType::f32;  ///< f32 | bf16 | f16: parameters and activations (bf16/f16 keep f32 master weights)
  // MoE
  /// @{
  /// N experts per MoE layer, each token routed to top_k of them.
  int64_t n_experts = 8, top_k = 1;
  /// @}
  RouterKind router = RouterKind::topk;  ///< the router kind
  std::optional<bool> renormalize;       ///< unset ("auto"): off for k = 1, on otherwise (moe::RouterConfig)
  bool noisy = true;                     ///< the top-k router's learned noise, in training only
  double capacity_factor = 0.0;          ///< 0: dropless
  double jitter = 0.0;                   ///< switch router input jitter
  /// @{
  /// Coefficients of the auxiliary losses: cv^2 importance + load, Switch load balancing, router z-loss.
  double aux_cv_coef = 0.01, aux_lb_coef = 0.0, aux_z_coef = 0.0;
  /// @}
  /// Recompute the experts' pre-activation [tokens * k, d_ff] in the backward instead of
  /// keeping it from the forward: one more GEMM of the experts' six, for about d_ff / d
  /// times the layer's input in memory (moe::grouped_ffn's `recompute`).
  bool expert_recompute = false;
  // HyperMoE
  /// @{
  /// HyperMoE sizes: the expert embeddings, the selection MLP's hidden width and output
  /// (the hypernetwork's input), the hypernetwork's hidden width, the layer embeddings.
  int64_t expert_emb_dim = 128, selection_hidden = 128, hyper_in = 128, hyper_hidden = 128, layer_emb_dim = 10;
  /// @}
  int64_t adapter_rank = 16;  ///< the HyperExpert adapter's bottleneck r
};

/// The ModelConfig of a preset (tiny | small | base: the sizes a config's model.preset
/// sets, the other fields their defaults); another name is an hmoe::Error listing them.
/// tiny: 4 layers, d_model 128, 4 heads, d_ff 512, block 128, adapter rank 16 (the
/// struct's defaults, as a test checks); small: 6, 256, 8, 1024, 256, 32; base: 12, 768,
/// 12, 3072, 1024, 64.
ModelConfig preset(std::string_view name);

/// The names config files use, and back; a name not in the list is an hmoe::Error that
/// names the key and the accepted values.
std::string_view name(FfnKind k);
/// The name of a router kind.
std::string_view name(RouterKind k);
std::string_view renormalize_name(std::optional<bool> r);  ///< auto | true | false
/// The FFN kind named s (dense | moe | hypermoe).
FfnKind parse_ffn_kind(std::string_view s);
/// The router kind named s (topk | switch).
RouterKind parse_router_kind(std::string_view s);
/// renormalize from auto | true | false.
std::optional<bool> parse_renormalize(std::string_view s);
DType parse_model_dtype(std::string_view s);  ///< f32 | bf16 | f16 (written back with dtype_name)

/// Checks value ranges and consistency (d_model divisible by n_head, k <= N, every float
/// finite and in its range, ...). vocab_size 0 passes (a training config's "from the
/// data"); building a model needs it set.
void validate(const ModelConfig& c);

/// A float option must be finite and in [lo, hi] (an end open where lo_open / hi_open);
/// else an hmoe::Error naming the key, the range and the value ("config: train.lr must be
/// a finite number in (0, 1], got inf"). Shared by the training config's checks.
void check_float_option(std::string_view key, double v, double lo, double hi, bool lo_open = false,
                        bool hi_open = false);

/// Whether block `layer` has the config's MoE / HyperMoE FFN (else a dense one).
bool layer_is_moe(const ModelConfig& c, int64_t layer);

}  // namespace hmoe::model
