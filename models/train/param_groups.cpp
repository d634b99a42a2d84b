// Parameter groups: which parameters decay, which belong to the hypernetwork.
#include "models/train/param_groups.h"

#include <map>

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
  for (auto& [name, p] : m.named_parameters()) {
    const bool hyper = hyper_apart && name.rfind("hyper.", 0) == 0;
    members[std::string(hyper ? "hyper_" : "") + (decays(name, p) ? "decay" : "plain")].push_back(p);
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
    groups_.push_back(
        {name, name.starts_with("hyper") ? t.hyper_lr_scale : 1.0, std::make_unique<optim::AdamW>(it->second, ao)});
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
