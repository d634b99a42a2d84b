// SGD, AdamW, the LR schedule and clipping: fused loops over each parameter's data.
#include "models/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "autograd/grad_mode.h"
#include "engine/io/safetensors.h"
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

std::vector<ParamGroup> one_group(std::vector<Tensor> params) {
  std::vector<ParamGroup> g(1);
  g[0].params = std::move(params);
  return g;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr) : groups_(std::move(groups)), lr_(lr) {
  std::set<std::string> names;
  // A tensor given twice (e.g. a shared submodule's parameters listed by hand next to a
  // module that lists them already) would be stepped twice per step.
  std::set<std::pair<const void*, int64_t>> seen;
  for (const ParamGroup& g : groups_) {
    HMOE_CHECK(names.insert(g.name).second, "optimizer: two parameter groups named '", g.name, "'");
    HMOE_CHECK(g.name.find('.') == std::string::npos, "optimizer: group name '", g.name, "' has a '.'");
    HMOE_CHECK(g.param_names.empty() || g.param_names.size() == g.params.size(), "optimizer: group '", g.name, "' has ",
               g.params.size(), " parameters and ", g.param_names.size(), " names");
    HMOE_CHECK(g.lr_scale >= 0 && (!g.weight_decay || *g.weight_decay >= 0), "optimizer: group '", g.name,
               "' needs lr_scale >= 0 and weight_decay >= 0");
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& p = g.params[i];
      check_param(p);
      HMOE_CHECK(seen.emplace(p.storage().get(), p.offset()).second, "optimizer: parameter ",
                 g.param_names.empty() ? std::to_string(i) : "'" + g.param_names[i] + "'", " of group '", g.name,
                 "' is given twice (it would be updated twice per step)");
      masters_.push_back(make_master(p));
    }
  }
}

std::string Optimizer::state_key(size_t group, size_t index, const std::string& what) const {
  const ParamGroup& g = groups_[group];
  const std::string param = g.param_names.empty() ? std::to_string(index) : g.param_names[index];
  return (g.name.empty() ? "" : g.name + ".") + param + "." + what;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> s;
  size_t first = 0;  // the group's first parameter over all groups
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const size_t n = groups_[gi].params.size();
    for (size_t i = 0; i < n; ++i)
      for (const auto& [what, per_param] : slots_) s.emplace_back(state_key(gi, i, what), (*per_param)[first + i]);
    for (size_t i = 0; i < n; ++i)
      if (masters_[first + i].defined()) s.emplace_back(state_key(gi, i, "master"), masters_[first + i]);
    first += n;
  }
  return s;
}

std::string Optimizer::parameter_of(const std::string& key) const {
  const size_t last = key.rfind('.');
  if (last == std::string::npos) return "";
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    const std::string prefix = g.name.empty() ? "" : g.name + ".";
    if (key.compare(0, prefix.size(), prefix) != 0 || last <= prefix.size()) continue;
    const std::string param = key.substr(prefix.size(), last - prefix.size());
    for (size_t i = 0; i < g.params.size(); ++i)
      if (param == (g.param_names.empty() ? std::to_string(i) : g.param_names[i])) return param;
  }
  return "";
}

void Optimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  const std::vector<std::pair<std::string, Tensor>> mine = state_tensors();
  HMOE_CHECK(state.size() == mine.size(), "optimizer state: ", state.size(), " tensors for ", mine.size(),
             " expected (", masters_.size(), " parameters in ", groups_.size(), " groups)");
  HMOE_CHECK(steps >= 0, "optimizer state: negative step count");
  std::map<std::string, Tensor> given;
  for (const auto& [n, t] : state) given.emplace(n, t);
  NoGradGuard ng;
  for (auto [name, dst] : mine) {
    auto it = given.find(name);
    HMOE_CHECK(it != given.end(), "optimizer state: missing '", name, "'");
    const Tensor& t = it->second;
    HMOE_CHECK(t.shape() == dst.shape() && t.dtype() == dst.dtype(), "optimizer state: '", name, "' is ", t.meta_str(),
               ", expected ", dst.meta_str());
    dst.copy_(t);
  }
  size_t k = 0;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) {
      Tensor dst = p;
      if (masters_[k].defined()) dst.copy_(masters_[k]);  // the low-precision copy follows its master
      ++k;
    }
  steps_ = steps;
}

nn::StateDict Optimizer::state_dict() const {
  nn::StateDict s(state_tensors());
  s.insert("step", from_vector(std::vector<int64_t>{steps_}, {}));
  return s;
}

void Optimizer::load_state_dict(const nn::StateDict& state) {
  const Tensor* step = state.find("step");
  HMOE_CHECK(step != nullptr && step->dtype() == DType::i64 && step->numel() == 1,
             "optimizer state: no i64 'step' entry");
  const int64_t steps = step->to(Device::cpu()).to_vector_as<int64_t>()[0];
  std::vector<std::pair<std::string, Tensor>> rest;
  for (const auto& [n, t] : state)
    if (n != "step") rest.emplace_back(n, t);
  load_state(rest, steps);
}

void Optimizer::save(const std::string& path) const {
  io::save_safetensors(path, state_dict().items(), {{"format", "hmoe-optimizer-1"}});
}

void Optimizer::load(const std::string& path) {
  const io::SafeTensors st = io::load_safetensors(path);
  try {
    load_state_dict(st.tensors);
  } catch (const Error& e) {
    HMOE_FAIL("optimizer: '", path, "': ", e.what());
  }
}

void Optimizer::zero_grad() {
  for (ParamGroup& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

namespace {
std::vector<Tensor> states_like(const std::vector<ParamGroup>& groups) {
  std::vector<Tensor> s;
  for (const ParamGroup& g : groups)
    for (const Tensor& p : g.params) s.push_back(state_like(p));
  return s;
}
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions o) : Optimizer(std::move(groups), o.lr), o_(o) {
  HMOE_CHECK(o.lr >= 0 && o.momentum >= 0 && o.weight_decay >= 0, "SGD: bad options");
  HMOE_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: nesterov needs momentum and no dampening");
  buf_ = states_like(groups_);
  add_state("momentum", &buf_);
}

void SGD::step() {
  NoGradGuard ng;
  for_each_update([&](size_t k, const ParamGroup& g, const Tensor& p, const Tensor& master) {
    const SGDStep s{group_lr(g), o_.momentum, o_.dampening, g.weight_decay.value_or(o_.weight_decay),
                    o_.nesterov, steps_ == 0};
    const bool copy = master.defined();
    sgd_update_(copy ? master : p, buf_[k], grad_of(p), copy ? p : Tensor(), s);
  });
  ++steps_;
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions o) : Optimizer(std::move(groups), o.lr), o_(o) {
  HMOE_CHECK(
      o.lr >= 0 && o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps > 0 && o.weight_decay >= 0,
      "AdamW: bad options (lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0)");
  m_ = states_like(groups_);
  v_ = states_like(groups_);
  add_state("exp_avg", &m_);
  add_state("exp_avg_sq", &v_);
}

void AdamW::step() {
  NoGradGuard ng;
  const int64_t step = steps_ + 1;
  for_each_update([&](size_t k, const ParamGroup& g, const Tensor& p, const Tensor& master) {
    const AdamWStep s{group_lr(g), o_.beta1, o_.beta2, o_.eps, g.weight_decay.value_or(o_.weight_decay), step};
    const bool copy = master.defined();
    adamw_update_(copy ? master : p, m_[k], v_[k], grad_of(p), copy ? p : Tensor(), s);
  });
  steps_ = step;
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
