// layer_norm and rms_norm over the trailing dims that the weight covers: fused
// forward (per-row statistics in f32 or wider, saved) and fused backward kernels.
#include "autograd/node.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/nn.h"
#include "ops/nn_kernels.h"

namespace hmoe {

namespace {
// Cost models (ops/dispatch.h): memory-bound, so bytes only.
KernelWork norm_work(const Tensor& x, const Tensor& weight, const Tensor& bias, double, bool, const Tensor& y,
                     const Tensor& mean, const Tensor& rstd) {
  using ops::distinct_bytes;
  return {0.0, distinct_bytes(x) + distinct_bytes(weight) + distinct_bytes(bias) + distinct_bytes(y) +
                   distinct_bytes(mean) + distinct_bytes(rstd)};
}
KernelWork norm_backward_work(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& mean,
                              const Tensor& rstd, bool, const Tensor& dx, const Tensor& dweight, const Tensor& dbias) {
  using ops::distinct_bytes;
  return {0.0, distinct_bytes(g) + distinct_bytes(x) + distinct_bytes(weight) + distinct_bytes(mean) +
                   distinct_bytes(rstd) + distinct_bytes(dx) + distinct_bytes(dweight) + distinct_bytes(dbias)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(NormKernel, norm_stub, &norm_work);
HMOE_DEFINE_STUB_WITH_WORK(NormBackwardKernel, norm_backward_stub, &norm_backward_work);

namespace {

void check_params(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const char* op) {
  HMOE_CHECK(is_floating(x.dtype()), op, ": needs a floating-point input, got ", x.meta_str());
  HMOE_CHECK(w.defined(), op, ": weight is required");
  HMOE_CHECK(w.dim() >= 1 && w.dim() <= x.dim(), op, ": weight ", w.meta_str(), " does not match input ",
             x.meta_str(), " (it must cover trailing dims)");
  for (int64_t i = 0; i < w.dim(); ++i)
    HMOE_CHECK(x.size(x.dim() - w.dim() + i) == w.size(i), op, ": weight ", w.meta_str(),
               " does not match the trailing dims of ", x.meta_str());
  HMOE_CHECK(x.dtype() == w.dtype(), op, ": input and weight must share a float dtype (", x.meta_str(), ", ",
             w.meta_str(), ")");
  if (b.defined()) {
    HMOE_CHECK(b.shape() == w.shape(), op, ": bias ", b.meta_str(), " does not match weight ", w.meta_str());
    HMOE_CHECK(b.dtype() == w.dtype(), op, ": bias ", b.meta_str(), " must have the weight's dtype ", w.meta_str());
  }
  ops::common_device(op, {&x, &w, &b});
  HMOE_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
}

Tensor norm_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool rms) {
  const char* name = rms ? "rms_norm" : "layer_norm";
  check_params(x, weight, bias, eps, name);
  const int64_t D = weight.numel();
  const int64_t M = D > 0 ? x.numel() / D : 0;
  const DType st = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Tensor xc = x.detach().contiguous().reshape({M, D});
  const Tensor wc = weight.detach().contiguous().reshape({D});
  const Tensor bc = bias.defined() ? bias.detach().contiguous().reshape({D}) : Tensor();
  Tensor y = Tensor::empty(x.shape(), {x.dtype(), x.device()});
  const Tensor mean = rms ? Tensor() : Tensor::empty({M}, {st, x.device()});
  const Tensor rstd = Tensor::empty({M}, {st, x.device()});
  if (y.numel() > 0) norm_stub.get(x.device())(xc, wc, bc, eps, rms, y.view({M, D}), mean, rstd);
  const bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  autograd::record(name, {x, weight, bias}, {y},
                   [xc, wc, mean, rstd, rms, gx, gw, gb, xs = x.shape(), ws = weight.shape()](
                       const std::vector<Tensor>& g) {
                     const int64_t M = xc.size(0), D = xc.size(1);
                     const TensorOptions o{xc.dtype(), xc.device()};
                     Tensor dx = gx ? Tensor::empty({M, D}, o) : Tensor();
                     Tensor dw = gw ? Tensor::empty({D}, o) : Tensor();
                     Tensor db = gb ? Tensor::empty({D}, o) : Tensor();
                     norm_backward_stub.get(xc.device())(g[0].to(xc.dtype()).contiguous().reshape({M, D}), xc, wc,
                                                         mean, rstd, rms, dx, dw, db);
                     return std::vector<Tensor>{gx ? dx.reshape(xs) : Tensor(), gw ? dw.reshape(ws) : Tensor(),
                                                gb ? db.reshape(ws) : Tensor()};
                   });
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm_impl(x, weight, bias, eps, false);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) { return norm_impl(x, weight, Tensor(), eps, true); }

}  // namespace hmoe
