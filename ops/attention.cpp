// dropout (mask from the Philox stream) and causal scaled-dot-product attention.
#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/nn.h"

namespace hmoe {

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  HMOE_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // Element i is kept when the i-th uniform draw of (seed, offset) is >= p: the same
  // mask on every backend.
  const Tensor keep = ge(uniform(x.shape(), gen, 0.0, 1.0, {DType::f32, x.device()}), full({}, p));
  return x * (keep.to(x.dtype()) * (1.0 / (1.0 - p)));
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  HMOE_CHECK(q.dim() == 4 && k.shape() == q.shape() && v.shape() == q.shape(),
             "causal_attention: q, k, v must share one [B, H, T, Dh] shape, got ", q.meta_str(), ", ", k.meta_str(),
             ", ", v.meta_str());
  const int64_t T = q.size(2), dh = q.size(3);
  if (scale == 0.0) scale = 1.0 / std::sqrt(double(dh));
  const Tensor scores = matmul(q, k.transpose(-1, -2)) * scale;  // [B, H, T, T]
  const Tensor future = gt(arange(T).unsqueeze(0), arange(T).unsqueeze(1));  // key j > query i
  return matmul(softmax(masked_fill(scores, future, -INFINITY), -1), v);
}

}  // namespace hmoe
