// dropout (mask regenerated from the Philox stream) and causal scaled-dot-product
// attention (fused kernel saving the logsumexp rows), with their gradients.
#include <cmath>

#include "autograd/node.h"
#include "ops/attention_kernels.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/nn.h"

namespace hmoe {

namespace {
// Cost models (ops/dispatch.h). The forward's two products (Q K^T, P V) over the causal
// triangle; the backward recomputes P and makes dP, dV, dQ, dK: 2.5 times the forward.
double causal_attention_flops(const Tensor& q) {
  const double bh = double(q.size(0) * q.size(1)), t = double(q.size(2));
  return 2.0 * bh * t * (t + 1) * double(q.size(3));
}
KernelWork attention_forward_work(const Tensor& q, const Tensor& k, const Tensor& v, double, const Tensor& out,
                                  const Tensor& lse) {
  using ops::distinct_bytes;
  return {causal_attention_flops(q),
          distinct_bytes(q) + distinct_bytes(k) + distinct_bytes(v) + distinct_bytes(out) + distinct_bytes(lse)};
}
KernelWork attention_backward_work(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                   const Tensor& grad_out, const Tensor& lse, double, const Tensor& dq,
                                   const Tensor& dk, const Tensor& dv) {
  using ops::distinct_bytes;
  return {2.5 * causal_attention_flops(q), distinct_bytes(q) + distinct_bytes(k) + distinct_bytes(v) +
                                               distinct_bytes(out) + distinct_bytes(grad_out) + distinct_bytes(lse) +
                                               distinct_bytes(dq) + distinct_bytes(dk) + distinct_bytes(dv)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(AttentionForwardKernel, attention_forward_stub, &attention_forward_work);
HMOE_DEFINE_STUB_WITH_WORK(AttentionBackwardKernel, attention_backward_stub, &attention_backward_work);
HMOE_DEFINE_STUB(DropoutKernel, dropout_stub);

namespace {

// x * mask * scale for the mask of (seed, offset); linear in x, so its backward is
// itself with the same mask (regenerated, never stored).
Tensor apply_dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  Tensor out = Tensor::empty(x.shape(), {x.dtype(), x.device()});
  if (out.numel() > 0) dropout_stub.get(x.device())(x.detach().contiguous(), out, p, seed, offset);
  autograd::record("dropout", {x}, {out}, [p, seed, offset](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{apply_dropout(g[0], p, seed, offset)};
  });
  return out;
}

// The kernels want unit stride along the last dim; anything else is copied.
Tensor unit_last(const Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous(); }

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  HMOE_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p, " for ", x.meta_str());
  HMOE_CHECK(is_floating(x.dtype()), "dropout: needs a floating-point tensor, got ", x.meta_str());
  if (!training || p == 0) return x;
  const uint64_t offset = gen.advance(uint64_t(x.numel()));
  return apply_dropout(x, p, gen.seed(), offset);
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  const Device dev = ops::common_device("causal_attention", {&q, &k, &v});
  HMOE_CHECK(q.dim() == 4 && k.shape() == q.shape() && v.shape() == q.shape(),
             "causal_attention: q, k, v must share one [B, H, T, Dh] shape, got ", q.meta_str(), ", ", k.meta_str(),
             ", ", v.meta_str());
  HMOE_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), "causal_attention: dtypes differ (", q.meta_str(),
             ", ", k.meta_str(), ", ", v.meta_str(), ")");
  HMOE_CHECK(is_floating(q.dtype()), "causal_attention: needs floating-point tensors, got ", q.meta_str());
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), dh = q.size(3);
  if (scale == 0.0) scale = 1.0 / std::sqrt(double(std::max<int64_t>(dh, 1)));  // 0 means the default
  HMOE_CHECK(std::isfinite(scale), "causal_attention: scale must be finite, got ", scale);
  const DType stat_dtype = q.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = Tensor::empty(q.shape(), {q.dtype(), dev});
  const Tensor lse = Tensor::empty({B, H, T}, {stat_dtype, dev});
  const Tensor qd = unit_last(q.detach()), kd = unit_last(k.detach()), vd = unit_last(v.detach());
  if (out.numel() > 0) {
    const ProfileScope scope("causal_attention", dev);  // the work is counted in its kernel
    attention_forward_stub.get(dev)(qd, kd, vd, scale, out, lse);
  }
  const bool gq = q.requires_grad(), gk = k.requires_grad(), gv = v.requires_grad();
  autograd::record("causal_attention", {q, k, v}, {out},
                   [qd, kd, vd, od = out.detach(), lse, scale, gq, gk, gv](const std::vector<Tensor>& g) {
                     Tensor dq = Tensor::empty(qd.shape(), {qd.dtype(), qd.device()});
                     Tensor dk = Tensor::empty(qd.shape(), {qd.dtype(), qd.device()});
                     Tensor dv = Tensor::empty(qd.shape(), {qd.dtype(), qd.device()});
                     if (dq.numel() > 0)
                       attention_backward_stub.get(qd.device())(qd, kd, vd, od, unit_last(g[0]), lse, scale, dq, dk,
                                                                dv);
                     return std::vector<Tensor>{gq ? dq : Tensor(), gk ? dk : Tensor(), gv ? dv : Tensor()};
                   });
  return out;
}

}  // namespace hmoe
