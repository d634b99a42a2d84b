// Module registration, traversal, mode and state dicts.
#include "models/nn/module.h"

#include <set>

#include "autograd/grad_mode.h"

namespace hmoe::nn {

void Module::check_name(const std::string& name) { HMOE_CHECK(!name.empty(), "Module: empty name"); }

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_name(name);
  HMOE_CHECK(t.defined() && is_floating(t.dtype()), "Module: parameter '", name, "' must be a floating tensor");
  if (!t.requires_grad()) t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_parameter(const std::string& name, Tensor t, RowShard shard) {
  HMOE_CHECK(t.defined() && t.dim() >= 1 && t.size(0) == shard.rows && shard.first >= 0 &&
                 shard.first + shard.rows <= shard.total,
             "Module: parameter '", name, "' (", t.defined() ? t.meta_str() : "undefined", ") cannot be rows [",
             shard.first, ", ", shard.first + shard.rows, ") of ", shard.total);
  register_parameter(name, t);
  shards_[name] = shard;
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_name(name);
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_name(name);
  HMOE_CHECK(m != nullptr, "Module: child '", name, "' is null");
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, bool buffers, std::vector<std::pair<std::string, Tensor>>& out,
                     std::set<const Module*>& seen) const {
  if (!seen.insert(this).second) return;
  for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  if (buffers)
    for (const auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", buffers, out, seen);
}

std::vector<std::pair<std::string, Tensor>> Module::collect_all(bool buffers) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<const Module*> seen;
  collect("", buffers, out, seen);
  return out;
}

void Module::collect_shards(const std::string& prefix, std::map<std::string, RowShard>& out,
                            std::set<const Module*>& seen) const {
  if (!seen.insert(this).second) return;
  for (const auto& [n, sh] : shards_) out.emplace(prefix + n, sh);
  for (const auto& [n, c] : children_) c->collect_shards(prefix + n + ".", out, seen);
}

void Module::apply(const std::function<void(Module&)>& fn, std::set<const Module*>& seen) {
  if (!seen.insert(this).second) return;
  fn(*this);
  for (auto& [n, c] : children_) c->apply(fn, seen);
}

void Module::apply(const std::function<void(Module&)>& fn) {
  std::set<const Module*> seen;
  apply(fn, seen);
}

std::map<std::string, RowShard> Module::parameter_shards() const {
  std::map<std::string, RowShard> out;
  std::set<const Module*> seen;
  collect_shards("", out, seen);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const { return collect_all(false); }

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

StateDict Module::state_dict() const { return StateDict(collect_all(true)); }

void Module::load_state_dict(const StateDict& state, bool strict) {
  NoGradGuard ng;
  std::set<std::string> used;
  for (auto& [name, t] : state_dict()) {
    const Tensor* src = state.find(name);
    if (src == nullptr) {
      HMOE_CHECK(!strict, "load_state_dict: missing key '", name, "'");
      continue;
    }
    HMOE_CHECK(src->shape() == t.shape(), "load_state_dict: '", name, "' has shape ", shape_str(src->shape()),
               ", the module expects ", shape_str(t.shape()));
    HMOE_CHECK(!strict || src->dtype() == t.dtype(), "load_state_dict: '", name, "' has dtype ",
               dtype_name(src->dtype()), ", the module expects ", dtype_name(t.dtype()));
    Tensor dst = t;
    dst.copy_(*src);
    used.insert(name);
  }
  if (strict)
    for (auto& [name, t] : state) HMOE_CHECK(used.count(name), "load_state_dict: unexpected key '", name, "'");
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::to(Device d) {
  NoGradGuard ng;
  for (auto& [n, t] : collect_all(true))
    if (t.device() != d) t.set_data(t.detach().to(d));
}

void Module::to(DType dt) {
  HMOE_CHECK(is_floating(dt), "Module::to: parameters can only be cast to a floating dtype, got ", dtype_name(dt));
  NoGradGuard ng;
  for (auto& [n, t] : collect_all(true))
    if (is_floating(t.dtype()) && t.dtype() != dt) t.set_data(t.detach().to(dt));
}

Device Module::device() const {
  const std::vector<std::pair<std::string, Tensor>> all = collect_all(true);
  return all.empty() ? Device::cpu() : all.front().second.device();
}

DType Module::dtype() const {
  for (const auto& [n, p] : named_parameters())
    if (is_floating(p.dtype())) return p.dtype();
  return DType::f32;
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters()) t.zero_grad();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

}  // namespace hmoe::nn
