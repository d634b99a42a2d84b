// SGD, AdamW, the LR schedule and clipping: fused loops over each parameter's data.
#include "models/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/optim.h"

namespace hmoe::optim {

namespace {
DType state_dtype(const Tensor& p) { return p.dtype() == DType::f64 ? DType::f64 : DType::f32; }

void check_param(const Tensor& p) {
  HMOE_CHECK(p.defined() && p.is_contiguous() && is_floating(p.dtype()),
             "optimizer: parameters must be contiguous floating tensors, got ",
             p.defined() ? p.meta_str() : "undefined");
}

// The f32 master copy of a bf16/f16 parameter (undefined for f32/f64 parameters, which
// are their own master weights).
Tensor make_master(const Tensor& p) {
  return p.dtype() == state_dtype(p) ? Tensor() : p.detach().to(DType::f32).contiguous();
}

Tensor state_like(const Tensor& p) { return zeros(p.shape(), {state_dtype(p), p.device()}); }

// A gradient the update kernels can read: contiguous, on the parameter's device.
Tensor grad_of(const Tensor& p) {
  const Tensor& g = p.grad();
  HMOE_CHECK(g.device() == p.device(), "optimizer: gradient on ", g.device().str(), " for a parameter on ",
             p.device().str());
  return g.contiguous();
}
}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (const Tensor& p : params_) {
    check_param(p);
    masters_.push_back(make_master(p));
  }
}

void Optimizer::append_master_state(std::vector<std::pair<std::string, Tensor>>& s) const {
  for (size_t k = 0; k < masters_.size(); ++k)
    if (masters_[k].defined()) s.emplace_back(std::to_string(k) + ".master", masters_[k]);
}

size_t Optimizer::master_state_count() const {
  size_t n = 0;
  for (const Tensor& m : masters_) n += m.defined();
  return n;
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

SGD::SGD(std::vector<Tensor> params, SGDOptions o) : Optimizer(std::move(params)), o_(o) {
  HMOE_CHECK(o.lr >= 0 && o.momentum >= 0 && o.weight_decay >= 0, "SGD: bad options");
  HMOE_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: nesterov needs momentum and no dampening");
  lr_ = o.lr;
  for (const Tensor& p : params_) buf_.push_back(state_like(p));
}

void SGD::step() {
  NoGradGuard ng;
  const SGDStep s{lr_, o_.momentum, o_.dampening, o_.weight_decay, o_.nesterov, steps_ == 0};
  for (size_t k = 0; k < params_.size(); ++k) {
    const Tensor& p = params_[k];
    if (!p.grad().defined()) continue;
    const bool copy = masters_[k].defined();
    sgd_update_(copy ? masters_[k] : p, buf_[k], grad_of(p), copy ? p : Tensor(), s);
  }
  ++steps_;
}

std::vector<std::pair<std::string, Tensor>> SGD::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t k = 0; k < buf_.size(); ++k) s.emplace_back(std::to_string(k) + ".momentum", buf_[k]);
  append_master_state(s);
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

void Optimizer::load_master_state(const std::vector<std::pair<std::string, Tensor>>& state) {
  for (size_t k = 0; k < masters_.size(); ++k)
    if (masters_[k].defined()) {
      load_named(state, std::to_string(k) + ".master", masters_[k]);
      NoGradGuard ng;
      params_[k].copy_(masters_[k]);  // the low-precision copy follows its master
    }
}

void SGD::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  HMOE_CHECK(state.size() == buf_.size() + master_state_count(), "optimizer state: ", state.size(), " tensors for ",
             buf_.size(), " parameters");
  for (size_t k = 0; k < buf_.size(); ++k) load_named(state, std::to_string(k) + ".momentum", buf_[k]);
  load_master_state(state);
  HMOE_CHECK(steps >= 0, "optimizer state: negative step count");
  steps_ = steps;
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions o) : Optimizer(std::move(params)), o_(o) {
  HMOE_CHECK(
      o.lr >= 0 && o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps > 0 && o.weight_decay >= 0,
      "AdamW: bad options (lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0)");
  lr_ = o.lr;
  for (const Tensor& p : params_) {
    m_.push_back(state_like(p));
    v_.push_back(state_like(p));
  }
}

void AdamW::step() {
  NoGradGuard ng;
  const AdamWStep s{lr_, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, steps_ + 1};
  for (size_t k = 0; k < params_.size(); ++k) {
    const Tensor& p = params_[k];
    if (!p.grad().defined()) continue;
    const bool copy = masters_[k].defined();
    adamw_update_(copy ? masters_[k] : p, m_[k], v_[k], grad_of(p), copy ? p : Tensor(), s);
  }
  steps_ = s.step;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t k = 0; k < m_.size(); ++k) {
    s.emplace_back(std::to_string(k) + ".exp_avg", m_[k]);
    s.emplace_back(std::to_string(k) + ".exp_avg_sq", v_[k]);
  }
  append_master_state(s);
  return s;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  HMOE_CHECK(state.size() == 2 * m_.size() + master_state_count(), "optimizer state: ", state.size(), " tensors for ",
             m_.size(), " parameters");
  for (size_t k = 0; k < m_.size(); ++k) {
    load_named(state, std::to_string(k) + ".exp_avg", m_[k]);
    load_named(state, std::to_string(k) + ".exp_avg_sq", v_[k]);
  }
  load_master_state(state);
  HMOE_CHECK(steps >= 0, "optimizer state: negative step count");
  steps_ = steps;
}

double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  if (step >= total) return min_lr;
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * progress));
}

double sum_of_squares(const std::vector<Tensor>& tensors) {
  NoGradGuard ng;
  // Per device, the f64 sums of squares in the given order; one host read per device.
  std::vector<std::pair<Device, Tensor>> totals;
  for (const Tensor& x : tensors) {
    const Tensor ss = sum_squares(x.detach());
    auto it = std::find_if(totals.begin(), totals.end(), [&](const auto& t) { return t.first == ss.device(); });
    if (it == totals.end())
      totals.emplace_back(ss.device(), ss);
    else
      it->second = it->second + ss;
  }
  double total = 0;
  for (const auto& [d, t] : totals) total += t.item();
  return total;
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  HMOE_CHECK(max_norm > 0, "clip_grad_norm_: max_norm must be positive, got ", max_norm);
  NoGradGuard ng;
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  const double norm = std::sqrt(sum_of_squares(grads));
  if (norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (Tensor g : grads) g.copy_(g * scale);
  }
  return norm;
}

}  // namespace hmoe::optim
