// softmax, log_softmax and cross_entropy: fused, max-subtracted kernels with
// statistics in f32 or wider, and fused backward kernels.
#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/nn.h"
#include "ops/nn_kernels.h"
#include "ops/reduce.h"

namespace hmoe {

namespace {
// Cost models (ops/dispatch.h): memory-bound, so bytes only.
KernelWork softmax_work(const Tensor& x, const Tensor& y, int64_t, int64_t, int64_t, bool) {
  return {0.0, ops::distinct_bytes(x) + ops::distinct_bytes(y)};
}
KernelWork softmax_backward_work(const Tensor& y, const Tensor& g, const Tensor& gx, int64_t, int64_t, int64_t, bool) {
  return {0.0, ops::distinct_bytes(y) + ops::distinct_bytes(g) + ops::distinct_bytes(gx)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(SoftmaxKernel, softmax_stub, &softmax_work);
HMOE_DEFINE_STUB_WITH_WORK(SoftmaxBackwardKernel, softmax_backward_stub, &softmax_backward_work);
HMOE_DEFINE_STUB(CrossEntropyKernel, cross_entropy_stub);
HMOE_DEFINE_STUB(CrossEntropyBackwardKernel, cross_entropy_backward_stub);

namespace {

void require_float(const char* op, const Tensor& x) {
  HMOE_CHECK(is_floating(x.dtype()), op, ": needs a floating-point tensor, got ", x.meta_str());
}

// f64 statistics for f64 data, f32 for everything narrower.
DType stats_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  require_float(name, x);
  dim = wrap_dim(dim, x.dim(), name);
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < x.dim(); ++d) (d < dim ? outer : d == dim ? n : inner) *= x.size(d);
  Tensor y = Tensor::empty(x.shape(), {x.dtype(), x.device()});
  if (y.numel() > 0) softmax_stub.get(x.device())(x.detach().contiguous(), y, outer, n, inner, log);
  autograd::record(name, {x}, {y}, [ys = y.detach(), outer, n, inner, log](const std::vector<Tensor>& g) {
    Tensor gx = Tensor::empty(ys.shape(), {ys.dtype(), ys.device()});
    if (gx.numel() > 0)
      softmax_backward_stub.get(ys.device())(ys, g[0].to(ys.dtype()).contiguous(), gx, outer, n, inner, log);
    return std::vector<Tensor>{gx};
  });
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

// Mean over the non-ignored targets; when every target is ignored the mean is NaN
// (0 / 0, as in PyTorch) and the gradient is zero.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Reduction reduction) {
  require_float("cross_entropy", logits);
  HMOE_CHECK(targets.dtype() == DType::i64 || targets.dtype() == DType::i32,
             "cross_entropy: targets must be i32 or i64 class indices, got ", targets.meta_str());
  HMOE_CHECK(logits.dim() == 2 || logits.dim() == 1, "cross_entropy: logits must be [N, C] or [C], got ",
             logits.meta_str());
  ops::common_device("cross_entropy", {&logits, &targets});
  const Tensor lg = (logits.dim() == 1 ? logits.detach().unsqueeze(0) : logits.detach()).contiguous();
  const Tensor tg = (targets.dim() == 0 ? targets.detach().unsqueeze(0) : targets.detach()).contiguous();
  HMOE_CHECK(tg.dim() == 1 && tg.size(0) == lg.size(0), "cross_entropy: targets ", targets.meta_str(),
             " do not match logits ", logits.meta_str(), " (need one target per row)");
  HMOE_CHECK(lg.size(1) > 0 || lg.size(0) == 0, "cross_entropy: logits ", logits.meta_str(), " have no classes");
  const int64_t N = lg.size(0);
  const DType st = stats_dtype(logits.dtype());
  Tensor loss = Tensor::empty({N}, {st, logits.device()});
  Tensor lse = Tensor::empty({N}, {st, logits.device()});
  const int64_t count = cross_entropy_stub.get(logits.device())(lg, tg, ignore_index, loss, lse);
  Tensor out;
  {
    NoGradGuard ng;
    switch (reduction) {
      case Reduction::none: out = logits.dim() == 1 ? loss.reshape({}) : loss; break;
      case Reduction::sum: out = sum(loss); break;
      case Reduction::mean: out = mul(sum(loss), count > 0 ? 1.0 / double(count) : std::nan("")); break;
    }
    out = out.to(logits.dtype());
  }
  const double scale = reduction == Reduction::mean ? (count > 0 ? 1.0 / double(count) : 0.0) : 1.0;
  autograd::record("cross_entropy", {logits}, {out},
                   [lg, tg, lse, ignore_index, scale, st, shape = logits.shape()](const std::vector<Tensor>& g) {
                     Tensor gx = Tensor::empty(lg.shape(), {lg.dtype(), lg.device()});
                     if (gx.numel() > 0)
                       cross_entropy_backward_stub.get(lg.device())(lg, tg, ignore_index, lse,
                                                                    g[0].to(st).contiguous(), scale, gx);
                     return std::vector<Tensor>{gx.reshape(shape)};
                   });
  return out;
}

}  // namespace hmoe
