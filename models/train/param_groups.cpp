// Parameter groups: which parameters decay, which belong to the hypernetwork.
#include "models/train/param_groups.h"

#include <algorithm>
#include <map>

#include "engine/error.h"

namespace hmoe::train {

namespace {

// Parameters that get weight decay: matrices and expert tensors, not biases, norms or
// the hypernetwork's layer embeddings.
bool decays(const std::string& name, const Tensor& p) {
  return p.dim() >= 2 && name.find("layer_emb") == std::string::npos;
}

}  // namespace

// The hypernetwork apart only when its scale is not 1, so the checkpoints of other runs
// keep two groups.
ParamGroups::ParamGroups(const nn::Module& m, const OptimConfig& t) {
  const bool hyper_apart = t.hyper_lr_scale != 1.0;
  std::map<std::string, std::vector<Tensor>> members;
  std::map<std::string, std::vector<std::string>> names;
  for (auto& [name, p] : m.named_parameters()) {
    const bool hyper = hyper_apart && name.rfind("hyper.", 0) == 0;
    const std::string group = std::string(hyper ? "hyper_" : "") + (decays(name, p) ? "decay" : "plain");
    members[group].push_back(p);
    names[group].push_back(name);
  }
  for (const std::string name : {"decay", "plain", "hyper_decay", "hyper_plain"}) {
    auto it = members.find(name);
    if (it == members.end()) continue;
    optim::AdamWOptions ao;
    ao.lr = t.lr;
    ao.beta1 = t.beta1;
    ao.beta2 = t.beta2;
    ao.eps = t.eps;
    ao.weight_decay = name.ends_with("decay") ? t.weight_decay : 0.0;
    groups_.push_back({name, name.starts_with("hyper") ? t.hyper_lr_scale : 1.0,
                       std::make_unique<optim::AdamW>(it->second, ao), names[name]});
  }
}

namespace {
// The optimiser's own key "<index>.<what>" split at its first dot.
std::pair<size_t, std::string> index_and_what(const std::string& key) {
  const size_t dot = key.find('.');
  return {size_t(std::stoull(key.substr(0, dot))), key.substr(dot + 1)};
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> ParamGroups::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const ParamGroup& g : groups_)
    for (auto& [key, t] : g.opt->state_tensors()) {
      const auto [i, what] = index_and_what(key);
      out.emplace_back(g.name + "." + g.params.at(i) + "." + what, t);
    }
  return out;
}

std::string ParamGroups::parameter_of(const std::string& key) const {
  for (const ParamGroup& g : groups_) {
    if (key.size() <= g.name.size() + 1 || key.compare(0, g.name.size() + 1, g.name + ".") != 0) continue;
    const size_t last = key.rfind('.');
    if (last <= g.name.size()) continue;
    const std::string param = key.substr(g.name.size() + 1, last - g.name.size() - 1);
    for (const std::string& p : g.params)
      if (p == param) return p;
  }
  return "";
}

void ParamGroups::load_state(const std::map<std::string, Tensor>& state, const std::map<std::string, int64_t>& steps) {
  std::map<std::string, std::vector<std::pair<std::string, Tensor>>> by_group;
  for (const auto& [key, t] : state) {
    const std::string param = parameter_of(key);
    HMOE_CHECK(!param.empty(), "optimizer state: unexpected tensor '", key, "' (no parameter of this model's groups)");
    const std::string group = key.substr(0, key.find('.'));
    const ParamGroup& g = *std::find_if(groups_.begin(), groups_.end(), [&](const ParamGroup& x) { return x.name == group; });
    const size_t i = size_t(std::find(g.params.begin(), g.params.end(), param) - g.params.begin());
    by_group[group].emplace_back(std::to_string(i) + key.substr(key.rfind('.')), t);
  }
  for (ParamGroup& g : groups_) {
    const auto st = steps.find(g.name);
    HMOE_CHECK(st != steps.end(), "optimizer state: no step count for group '", g.name, "'");
    try {
      g.opt->load_state(by_group[g.name], st->second);
    } catch (const Error& e) {
      HMOE_FAIL("the optimizer state does not fit this model's parameter group '", g.name, "': ", e.what());
    }
  }
}

void ParamGroups::set_lr(double lr) {
  for (ParamGroup& g : groups_) g.opt->set_lr(lr * g.lr_scale);
}

void ParamGroups::zero_grad() {
  for (ParamGroup& g : groups_) g.opt->zero_grad();
}

void ParamGroups::step() {
  for (ParamGroup& g : groups_) {
    g.opt->step();
    g.opt->zero_grad();
  }
}

}  // namespace hmoe::train
