// softmax, log_softmax and cross_entropy: max-subtracted through logsumexp, with
// statistics in f32 or wider (half inputs are promoted).
#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/nn.h"
#include "ops/reduce.h"

namespace hmoe {

namespace {
Tensor wide(const Tensor& x) { return x.dtype() == DType::bf16 || x.dtype() == DType::f16 ? x.to(DType::f32) : x; }
void require_float(const char* op, const Tensor& x) {
  HMOE_CHECK(is_floating(x.dtype()), op, ": needs a floating-point tensor, got ", x.meta_str());
}
}  // namespace

Tensor log_softmax(const Tensor& x, int64_t dim) {
  require_float("log_softmax", x);
  dim = wrap_dim(dim, x.dim(), "log_softmax");
  const Tensor xw = wide(x);
  if (x.dim() == 0) return (xw - xw).to(x.dtype());
  return (xw - logsumexp(xw, {dim}, true)).to(x.dtype());
}

Tensor softmax(const Tensor& x, int64_t dim) {
  require_float("softmax", x);
  dim = wrap_dim(dim, x.dim(), "softmax");
  return exp(log_softmax(wide(x), dim)).to(x.dtype());
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Reduction reduction) {
  require_float("cross_entropy", logits);
  HMOE_CHECK(targets.dtype() == DType::i64 || targets.dtype() == DType::i32,
             "cross_entropy: targets must be i32 or i64 class indices, got ", targets.meta_str());
  HMOE_CHECK(logits.dim() == 2 || logits.dim() == 1, "cross_entropy: logits must be [N, C] or [C], got ",
             logits.meta_str());
  const Tensor lg = logits.dim() == 1 ? logits.unsqueeze(0) : logits;
  const Tensor tg = (targets.dim() == 0 ? targets.unsqueeze(0) : targets).to(DType::i64);
  HMOE_CHECK(tg.dim() == 1 && tg.size(0) == lg.size(0), "cross_entropy: targets ", targets.meta_str(),
             " do not match logits ", logits.meta_str());
  const int64_t C = lg.size(1);
  const Tensor valid = ne(tg, full({}, double(ignore_index), {DType::i64}));
  const Tensor safe = where(valid, tg, zeros({}, {DType::i64}));
  if (tg.numel() > 0) {
    const double lo = min(safe).item(), hi = max(safe).item();
    HMOE_CHECK(lo >= 0 && hi < double(C), "cross_entropy: target ", lo < 0 ? lo : hi, " is out of range [0, ", C,
               ") (ignore_index is ", ignore_index, ")");
  }
  const Tensor lw = wide(lg);
  const Tensor per = (logsumexp(lw, {1}) - gather(lw, 1, safe.unsqueeze(1)).squeeze(1)) * valid.to(lw.dtype());
  Tensor out;
  switch (reduction) {
    case Reduction::none: out = logits.dim() == 1 ? per.squeeze(0) : per; break;
    case Reduction::sum: out = sum(per); break;
    case Reduction::mean: {
      const double count = sum(valid).item();
      out = mul(sum(per), count > 0 ? 1.0 / count : std::nan(""));
      break;
    }
  }
  return out.to(logits.dtype());
}

}  // namespace hmoe
