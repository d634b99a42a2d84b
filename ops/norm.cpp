// layer_norm and rms_norm over the trailing dims that the weight covers, with
// statistics in f32 or wider.
#include <numeric>

#include "ops/elementwise.h"
#include "ops/nn.h"
#include "ops/reduce.h"

namespace hmoe {

namespace {
std::vector<int64_t> trailing_dims(const Tensor& x, const Tensor& w, const char* op) {
  HMOE_CHECK(w.dim() >= 1 && w.dim() <= x.dim(), op, ": weight ", w.meta_str(), " does not fit input ", x.meta_str());
  for (int64_t i = 0; i < w.dim(); ++i)
    HMOE_CHECK(x.size(x.dim() - w.dim() + i) == w.size(i), op, ": weight ", w.meta_str(),
               " does not match the trailing dims of ", x.meta_str());
  HMOE_CHECK(is_floating(x.dtype()) && x.dtype() == w.dtype(), op, ": input and weight must share a float dtype (",
             x.meta_str(), ", ", w.meta_str(), ")");
  std::vector<int64_t> dims(static_cast<size_t>(w.dim()));
  std::iota(dims.begin(), dims.end(), x.dim() - w.dim());
  return dims;
}
Tensor wide(const Tensor& x) { return x.dtype() == DType::bf16 || x.dtype() == DType::f16 ? x.to(DType::f32) : x; }
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const auto dims = trailing_dims(x, weight, "layer_norm");
  HMOE_CHECK(!bias.defined() || bias.shape() == weight.shape(), "layer_norm: bias ", bias.meta_str(),
             " does not match weight ", weight.meta_str());
  HMOE_CHECK(eps >= 0, "layer_norm: eps must be >= 0");
  const Tensor xw = wide(x);
  const Tensor centered = xw - mean(xw, dims, true);
  const Tensor normed = centered * rsqrt(mean(square(centered), dims, true) + eps);
  Tensor y = normed.to(x.dtype()) * weight;
  return bias.defined() ? y + bias : y;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const auto dims = trailing_dims(x, weight, "rms_norm");
  HMOE_CHECK(eps >= 0, "rms_norm: eps must be >= 0");
  const Tensor xw = wide(x);
  return (xw * rsqrt(mean(square(xw), dims, true) + eps)).to(x.dtype()) * weight;
}

}  // namespace hmoe
