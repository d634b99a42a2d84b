// The model config's names (parsed from and written back to config files) and its
// range checks.
#include "models/hypermoe/config.h"

#include <array>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "engine/error.h"

namespace hmoe::model {

namespace {

constexpr std::array kFfnKinds{FfnKind::dense, FfnKind::moe, FfnKind::hypermoe};
constexpr std::array kRouterKinds{RouterKind::topk, RouterKind::switch_};
constexpr std::array kRenormalize{std::optional<bool>(), std::optional<bool>(true), std::optional<bool>(false)};
constexpr std::array kModelDTypes{DType::f32, DType::bf16, DType::f16};

// The value among `values` whose name is `s`; else an error naming `key` and listing
// the names ("a, b or c").
template <typename T, size_t N, typename NameFn>
T parse_named(std::string_view key, std::string_view s, const std::array<T, N>& values, NameFn name_of) {
  std::string expected;
  for (size_t i = 0; i < N; ++i) {
    if (name_of(values[i]) == s) return values[i];
    expected += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(name_of(values[i]));
  }
  HMOE_FAIL("config: ", key, " must be ", expected, ", got '", s, "'");
}

}  // namespace

ModelConfig preset(std::string_view name) {
  struct Sizes {
    std::string_view name;
    int64_t n_layer, d_model, n_head, d_ff, block_size, adapter_rank;
  };
  static constexpr Sizes kPresets[] = {
      {"tiny", 4, 128, 4, 512, 128, 16}, {"small", 6, 256, 8, 1024, 256, 32}, {"base", 12, 768, 12, 3072, 1024, 64}};
  for (const Sizes& p : kPresets) {
    if (p.name != name) continue;
    ModelConfig c;
    c.preset = std::string(name);
    c.n_layer = p.n_layer;
    c.d_model = p.d_model;
    c.n_head = p.n_head;
    c.d_ff = p.d_ff;
    c.block_size = p.block_size;
    c.adapter_rank = p.adapter_rank;
    return c;
  }
  HMOE_FAIL("config: unknown model preset '", name, "' (expected tiny, small or base)");
}

std::string_view name(FfnKind k) {
  switch (k) {
    case FfnKind::dense:
      return "dense";
    case FfnKind::moe:
      return "moe";
    case FfnKind::hypermoe:
      return "hypermoe";
  }
  return "?";
}

std::string_view name(RouterKind k) { return k == RouterKind::switch_ ? "switch" : "topk"; }

std::string_view renormalize_name(std::optional<bool> r) { return !r ? "auto" : *r ? "true" : "false"; }

FfnKind parse_ffn_kind(std::string_view s) {
  return parse_named("model.ffn", s, kFfnKinds, [](FfnKind k) { return name(k); });
}

RouterKind parse_router_kind(std::string_view s) {
  return parse_named("model.router", s, kRouterKinds, [](RouterKind k) { return name(k); });
}

std::optional<bool> parse_renormalize(std::string_view s) {
  return parse_named("model.renormalize", s, kRenormalize, renormalize_name);
}

DType parse_model_dtype(std::string_view s) { return parse_named("model.dtype", s, kModelDTypes, dtype_name); }

void check_float_option(std::string_view key, double v, double lo, double hi, bool lo_open, bool hi_open) {
  const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (ok) return;
  std::ostringstream range;
  range << (lo_open ? "(" : "[") << lo << ", ";
  if (std::isinf(hi))
    range << "inf)";
  else
    range << hi << (hi_open ? ")" : "]");
  HMOE_FAIL("config: ", key, " must be a finite number in ", range.str(), ", got ", v);
}

void validate(const ModelConfig& m) {
  // Counts that size loops and vectors before any tensor: bounded, so that a huge value
  // is an error here and not a long allocation.
  constexpr int64_t kMaxLayers = 4096;
  HMOE_CHECK(m.n_layer >= 1 && m.d_model >= 1 && m.n_head >= 1 && m.d_ff >= 1 && m.block_size >= 1,
             "config: model sizes must be positive");
  HMOE_CHECK(m.n_layer <= kMaxLayers, "config: model.n_layer must be at most ", kMaxLayers, ", got ", m.n_layer);
  HMOE_CHECK(m.vocab_size >= 0 && m.vocab_size <= (int64_t(1) << 32), "config: model.vocab_size must be in [0, 2^32] ",
             "(0: from the data), got ", m.vocab_size);
  HMOE_CHECK(m.d_model % m.n_head == 0, "config: model.d_model (", m.d_model, ") must be divisible by model.n_head (",
             m.n_head, ")");
  HMOE_CHECK(m.moe_every == 1 || m.moe_every == 2, "config: model.moe_every must be 1 or 2");
  HMOE_CHECK(m.n_experts >= 1 && m.n_experts <= 64, "config: model.n_experts must be in [1, 64], got ", m.n_experts);
  HMOE_CHECK(m.top_k >= 1 && m.top_k <= m.n_experts, "config: model.top_k (", m.top_k,
             ") must be in [1, n_experts = ", m.n_experts, "]");
  HMOE_CHECK(m.router != RouterKind::switch_ || m.top_k == 1,
             "config: the switch router is top-1; set model.top_k = 1");
  constexpr double kInf = std::numeric_limits<double>::infinity();
  check_float_option("model.dropout", m.dropout, 0, 1, false, true);
  check_float_option("model.capacity_factor", m.capacity_factor, 0, kInf);  // 0: dropless
  check_float_option("model.jitter", m.jitter, 0, 1, false, true);          // inputs scaled by U(1 - j, 1 + j)
  check_float_option("model.aux_cv_coef", m.aux_cv_coef, 0, kInf);
  check_float_option("model.aux_lb_coef", m.aux_lb_coef, 0, kInf);
  check_float_option("model.aux_z_coef", m.aux_z_coef, 0, kInf);
  HMOE_CHECK(m.adapter_rank >= 1 && m.expert_emb_dim >= 1 && m.selection_hidden >= 1 && m.hyper_in >= 1 &&
                 m.hyper_hidden >= 1 && m.layer_emb_dim >= 1,
             "config: HyperMoE sizes must be positive");
}

bool layer_is_moe(const ModelConfig& c, int64_t layer) {
  return c.ffn != FfnKind::dense && (c.moe_every == 1 || layer % 2 == 1);
}

}  // namespace hmoe::model
