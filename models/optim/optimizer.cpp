// SGD, AdamW, the LR schedule and clipping: fused loops over each parameter's data.
#include "models/optim/optimizer.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "engine/thread_pool.h"
#include "ops/elementwise.h"
#include "ops/factory.h"

namespace hmoe::optim {

namespace {
DType state_dtype(const Tensor& p) { return p.dtype() == DType::f64 ? DType::f64 : DType::f32; }

void check_param(const Tensor& p) {
  HMOE_CHECK(p.defined() && p.device().is_cpu() && p.is_contiguous() && is_floating(p.dtype()),
             "optimizer: parameters must be contiguous floating cpu tensors, got ", p.meta_str());
}

// fn(p, g, i) over elements of param and grad (grad converted to the state dtype).
template <typename S, typename Fn>
void for_each(const Tensor& p, const Tensor& g, Fn&& fn) {
  const Tensor gc = g.to(dtype_of<S>::value).contiguous();
  const S* gp = gc.data_ptr<S>();
  detail::dispatch_float(p.dtype(), "optimizer", [&]<typename T>() {
    T* pp = p.data_ptr<T>();
    parallel_for(p.numel(), 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        S x = S(compute_t<T>(pp[i]));
        fn(x, gp[i], i);
        pp[i] = T(compute_t<T>(x));
      }
    });
  });
  p.storage()->bump_version();
}
}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (const Tensor& p : params_) check_param(p);
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

SGD::SGD(std::vector<Tensor> params, SGDOptions o) : Optimizer(std::move(params)), o_(o) {
  HMOE_CHECK(o.lr >= 0 && o.momentum >= 0 && o.weight_decay >= 0, "SGD: bad options");
  HMOE_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: nesterov needs momentum and no dampening");
  lr_ = o.lr;
  for (const Tensor& p : params_) buf_.push_back(zeros(p.shape(), {state_dtype(p)}));
}

void SGD::step() {
  NoGradGuard ng;
  const bool first = steps_ == 0;
  for (size_t k = 0; k < params_.size(); ++k) {
    const Tensor& p = params_[k];
    if (!p.grad().defined()) continue;
    auto run = [&]<typename S>() {
      S* b = buf_[k].data_ptr<S>();
      const S lr = S(lr_), mu = S(o_.momentum), damp = S(o_.dampening), wd = S(o_.weight_decay);
      for_each<S>(p, p.grad(), [&](S& x, S g, int64_t i) {
        g += wd * x;
        if (mu != 0) {
          b[i] = first ? g : mu * b[i] + (1 - damp) * g;
          g = o_.nesterov ? g + mu * b[i] : b[i];
        }
        x -= lr * g;
      });
    };
    if (state_dtype(p) == DType::f64) run.template operator()<double>();
    else run.template operator()<float>();
  }
  ++steps_;
}

std::vector<std::pair<std::string, Tensor>> SGD::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t k = 0; k < buf_.size(); ++k) s.emplace_back(std::to_string(k) + ".momentum", buf_[k]);
  return s;
}

namespace {
void load_named(const std::vector<std::pair<std::string, Tensor>>& state, const std::string& name, Tensor& dst) {
  for (const auto& [n, t] : state)
    if (n == name) {
      HMOE_CHECK(t.shape() == dst.shape() && t.dtype() == dst.dtype(), "optimizer state: '", name, "' is ",
                 t.meta_str(), ", expected ", dst.meta_str());
      NoGradGuard ng;
      dst.copy_(t);
      return;
    }
  HMOE_FAIL("optimizer state: missing '", name, "'");
}
}  // namespace

void SGD::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  HMOE_CHECK(state.size() == buf_.size(), "optimizer state: ", state.size(), " tensors for ", buf_.size(),
             " parameters");
  for (size_t k = 0; k < buf_.size(); ++k) load_named(state, std::to_string(k) + ".momentum", buf_[k]);
  steps_ = steps;
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions o) : Optimizer(std::move(params)), o_(o) {
  HMOE_CHECK(o.lr >= 0 && o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps > 0 &&
                 o.weight_decay >= 0,
             "AdamW: bad options (lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0)");
  lr_ = o.lr;
  for (const Tensor& p : params_) {
    m_.push_back(zeros(p.shape(), {state_dtype(p)}));
    v_.push_back(zeros(p.shape(), {state_dtype(p)}));
  }
}

void AdamW::step() {
  NoGradGuard ng;
  const int64_t t = steps_ + 1;
  const double bc1 = 1 - std::pow(o_.beta1, double(t)), bc2 = 1 - std::pow(o_.beta2, double(t));
  for (size_t k = 0; k < params_.size(); ++k) {
    const Tensor& p = params_[k];
    if (!p.grad().defined()) continue;
    auto run = [&]<typename S>() {
      S* m = m_[k].data_ptr<S>();
      S* v = v_[k].data_ptr<S>();
      const S b1 = S(o_.beta1), b2 = S(o_.beta2), eps = S(o_.eps), decay = S(1 - lr_ * o_.weight_decay);
      const S step_size = S(lr_ / bc1), rbc2 = S(1 / std::sqrt(bc2));
      for_each<S>(p, p.grad(), [&](S& x, S g, int64_t i) {
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        x = x * decay - step_size * m[i] / (std::sqrt(v[i]) * rbc2 + eps);
      });
    };
    if (state_dtype(p) == DType::f64) run.template operator()<double>();
    else run.template operator()<float>();
  }
  steps_ = t;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t k = 0; k < m_.size(); ++k) {
    s.emplace_back(std::to_string(k) + ".exp_avg", m_[k]);
    s.emplace_back(std::to_string(k) + ".exp_avg_sq", v_[k]);
  }
  return s;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  HMOE_CHECK(state.size() == 2 * m_.size(), "optimizer state: ", state.size(), " tensors for ", m_.size(),
             " parameters");
  for (size_t k = 0; k < m_.size(); ++k) {
    load_named(state, std::to_string(k) + ".exp_avg", m_[k]);
    load_named(state, std::to_string(k) + ".exp_avg_sq", v_[k]);
  }
  HMOE_CHECK(steps >= 0, "optimizer state: negative step count");
  steps_ = steps;
}

double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  if (step >= total) return min_lr;
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * progress));
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  HMOE_CHECK(max_norm > 0, "clip_grad_norm_: max_norm must be positive, got ", max_norm);
  NoGradGuard ng;
  double total = 0;
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    for (double g : p.grad().to_vector()) total += g * g;
  }
  const double norm = std::sqrt(total);
  if (norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params) {
      if (!p.grad().defined()) continue;
      Tensor g = p.grad();
      g.copy_(g * scale);
    }
  }
  return norm;
}

}  // namespace hmoe::optim
