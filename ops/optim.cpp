// The optimizer ops: argument checks and dispatch for the fused AdamW / SGD updates and
// the sum of squares (no autograd: they run on parameters and gradients under no-grad).
#include "ops/optim.h"

#include "ops/dispatch.h"
#include "ops/optim_kernels.h"

namespace hmoe {

namespace {
// Cost model (ops/dispatch.h): master and both moments read and written, grad read, the
// low-precision param (when there is one) written.
KernelWork adamw_work(const AdamWKernelArgs&, const Tensor& master, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                      const Tensor& grad, const Tensor& param) {
  using ops::distinct_bytes;
  return {0.0, 2.0 * (distinct_bytes(master) + distinct_bytes(exp_avg) + distinct_bytes(exp_avg_sq)) +
                   distinct_bytes(grad) + distinct_bytes(param)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(AdamWKernel, adamw_stub, &adamw_work);
HMOE_DEFINE_STUB(SGDKernel, sgd_stub);
HMOE_DEFINE_STUB(SumSquaresKernel, sum_squares_stub);

namespace {

std::string meta(const Tensor& t) { return t.defined() ? t.meta_str() : std::string("undefined"); }

// master and its state tensors: contiguous, one f32/f64 dtype; grad and the optional
// low-precision copy: contiguous floats of the same numel; all on one device.
Device check_update(const char* op, const Tensor& master, std::initializer_list<const Tensor*> state,
                    const Tensor& grad, const Tensor& param) {
  HMOE_CHECK(
      master.defined() && (master.dtype() == DType::f32 || master.dtype() == DType::f64) && master.is_contiguous(), op,
      ": master weights must be a contiguous f32 or f64 tensor, got ", meta(master));
  for (const Tensor* s : state)
    HMOE_CHECK(s->defined() && s->dtype() == master.dtype() && s->shape() == master.shape() && s->is_contiguous(), op,
               ": optimizer state ", meta(*s), " must be contiguous and match the master weights ", master.meta_str());
  HMOE_CHECK(grad.defined() && is_floating(grad.dtype()) && grad.numel() == master.numel() && grad.is_contiguous(), op,
             ": gradient ", meta(grad), " must be a contiguous float tensor of ", master.numel(), " elements");
  HMOE_CHECK(!param.defined() || (is_floating(param.dtype()) && param.numel() == master.numel() &&
                                  param.is_contiguous() && !param.is_same(master)),
             op, ": the parameter copy ", meta(param), " must be a distinct contiguous float tensor of ",
             master.numel(), " elements");
  std::initializer_list<const Tensor*> all = {&master, &grad, &param};
  const Device d = ops::common_device(op, all);
  for (const Tensor* s : state)
    HMOE_CHECK(s->device() == d, op, ": state ", s->meta_str(), " is on ", s->device().str(),
               ", the master weights on ", d.str());
  return d;
}

void bump(const Tensor& t) {
  if (t.defined()) t.storage()->bump_version();
}

}  // namespace

void adamw_update_(const Tensor& master, const Tensor& exp_avg, const Tensor& exp_avg_sq, const Tensor& grad,
                   const Tensor& param, const AdamWStep& s) {
  HMOE_CHECK(s.lr >= 0 && s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1 && s.eps > 0 &&
                 s.weight_decay >= 0 && s.step >= 1,
             "adamw_update_: bad step (lr ", s.lr, ", betas ", s.beta1, "/", s.beta2, ", eps ", s.eps,
             ", weight_decay ", s.weight_decay, ", step ", s.step, ")");
  const Device d = check_update("adamw_update_", master, {&exp_avg, &exp_avg_sq}, grad, param);
  const double t = double(s.step);
  const AdamWKernelArgs a{s.beta1,
                          s.beta2,
                          s.eps,
                          1 - s.lr * s.weight_decay,
                          s.lr / (1 - std::pow(s.beta1, t)),
                          1 / std::sqrt(1 - std::pow(s.beta2, t))};
  if (master.numel() > 0) adamw_stub.get(d)(a, master, exp_avg, exp_avg_sq, grad, param);
  for (const Tensor* x : {&master, &exp_avg, &exp_avg_sq, &param}) bump(*x);
}

void sgd_update_(const Tensor& master, const Tensor& momentum_buf, const Tensor& grad, const Tensor& param,
                 const SGDStep& s) {
  HMOE_CHECK(s.lr >= 0 && s.momentum >= 0 && s.dampening >= 0 && s.weight_decay >= 0, "sgd_update_: bad step (lr ",
             s.lr, ", momentum ", s.momentum, ", dampening ", s.dampening, ", weight_decay ", s.weight_decay, ")");
  const Device d = s.momentum > 0 ? check_update("sgd_update_", master, {&momentum_buf}, grad, param)
                                  : check_update("sgd_update_", master, {}, grad, param);
  if (master.numel() > 0) sgd_stub.get(d)(s, master, s.momentum > 0 ? momentum_buf : Tensor(), grad, param);
  for (const Tensor* x : {&master, &momentum_buf, &param}) bump(*x);
}

Tensor sum_squares(const Tensor& x) {
  HMOE_CHECK(x.defined() && is_floating(x.dtype()), "sum_squares: expected a float tensor, got ", meta(x));
  Tensor out = Tensor::empty({}, {DType::f64, x.device()});
  const Tensor xc = x.contiguous();
  sum_squares_stub.get(x.device())(xc, out);
  return out;
}

}  // namespace hmoe
