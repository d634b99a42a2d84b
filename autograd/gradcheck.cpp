// gradcheck: analytic vector-Jacobian products (backward) against numeric ones
// (central differences) for random output weightings.
#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "engine/rng.h"

namespace hmoe::autograd {

namespace {
std::vector<double> values_f64(const Tensor& t) {
  Tensor c = t.detach().to(DType::f64).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs_in, const GradcheckOptions& opts) {
  // Work on private leaf copies so the caller's tensors are never modified.
  std::vector<Tensor> inputs;
  for (const Tensor& t : inputs_in) {
    if (!t.defined() || !t.requires_grad()) {
      inputs.push_back(t);
      continue;
    }
    HMOE_CHECK(t.dtype() == DType::f64 && t.device().is_cpu(), "gradcheck: inputs that require grad must be f64 on "
               "the cpu, got ", t.meta_str());
    Tensor c = t.detach().clone();
    c.set_requires_grad(true);
    inputs.push_back(c);
  }

  GradcheckResult res;
  Tensor out0;
  {
    GradModeGuard on(true);
    out0 = fn(inputs);
  }
  HMOE_CHECK(out0.defined() && is_floating(out0.dtype()), "gradcheck: fn must return a floating tensor");
  const int64_t m = out0.numel();

  // Projections v_p, drawn from the seed.
  std::vector<std::vector<double>> v(size_t(opts.projections), std::vector<double>(size_t(m)));
  for (int p = 0; p < opts.projections; ++p)
    for (int64_t j = 0; j < m; ++j)
      v[size_t(p)][size_t(j)] = 2.0 * philox_uniform_f64(opts.seed + uint64_t(p), 0, uint64_t(j)) - 1.0;

  // Analytic: one backward per projection.
  std::vector<std::vector<std::vector<double>>> analytic(size_t(opts.projections));
  for (int p = 0; p < opts.projections; ++p) {
    for (Tensor& t : inputs)
      if (t.defined() && t.requires_grad()) t.zero_grad();
    Tensor out;
    {
      GradModeGuard on(true);
      out = fn(inputs);
    }
    Tensor g = Tensor::empty(out.shape(), {out.dtype(), out.device()});
    {
      Tensor gd = Tensor::empty(out.shape(), {DType::f64});
      std::copy(v[size_t(p)].begin(), v[size_t(p)].end(), gd.data_ptr<double>());
      NoGradGuard ng;
      g.copy_(gd);
    }
    if (out.requires_grad()) out.backward(g);
    for (const Tensor& t : inputs) {
      if (!t.defined() || !t.requires_grad()) {
        analytic[size_t(p)].emplace_back();
        continue;
      }
      analytic[size_t(p)].push_back(t.grad().defined() ? values_f64(t.grad())
                                                        : std::vector<double>(size_t(t.numel()), 0.0));
    }
  }

  // Numeric: perturb each element, difference the projected outputs.
  NoGradGuard ng;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = inputs[k];
    if (!t.defined() || !t.requires_grad()) continue;
    double* x = t.data_ptr<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double orig = x[i];
      x[i] = orig + opts.eps;
      const std::vector<double> fp = values_f64(fn(inputs));
      x[i] = orig - opts.eps;
      const std::vector<double> fm = values_f64(fn(inputs));
      x[i] = orig;
      for (int p = 0; p < opts.projections; ++p) {
        double num = 0;
        for (int64_t j = 0; j < m; ++j) num += v[size_t(p)][size_t(j)] * (fp[size_t(j)] - fm[size_t(j)]);
        num /= 2 * opts.eps;
        const double ana = analytic[size_t(p)][k][size_t(i)];
        const double err = std::abs(ana - num);
        res.max_abs_error = std::max(res.max_abs_error, err);
        if (!(err <= opts.atol + opts.rtol * std::abs(num)) && res.ok) {
          res.ok = false;
          std::ostringstream os;
          os << "gradcheck: input " << k << " (" << t.meta_str() << ") element " << i << ": analytic " << ana
             << " vs numeric " << num << " (projection " << p << ")";
          res.message = os.str();
        }
      }
    }
  }
  return res;
}

}  // namespace hmoe::autograd
