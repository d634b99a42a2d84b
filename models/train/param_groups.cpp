// Parameter groups: which parameters decay, which belong to the hypernetwork.
#include "models/train/param_groups.h"

#include <map>
#include <string>

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
std::vector<optim::ParamGroup> param_groups(const nn::Module& m, const OptimConfig& t) {
  const bool hyper_apart = t.hyper_lr_scale != 1.0;
  std::map<std::string, optim::ParamGroup> members;
  for (auto& [name, p] : m.named_parameters()) {
    const bool hyper = hyper_apart && name.rfind("hyper.", 0) == 0;
    const std::string group = std::string(hyper ? "hyper_" : "") + (decays(name, p) ? "decay" : "plain");
    members[group].params.push_back(p);
    members[group].param_names.push_back(name);
  }
  std::vector<optim::ParamGroup> groups;
  for (const std::string name : {"decay", "plain", "hyper_decay", "hyper_plain"}) {
    auto it = members.find(name);
    if (it == members.end()) continue;
    optim::ParamGroup g = std::move(it->second);
    g.name = name;
    g.lr_scale = name.starts_with("hyper") ? t.hyper_lr_scale : 1.0;
    g.weight_decay = name.ends_with("decay") ? t.weight_decay : 0.0;
    groups.push_back(std::move(g));
  }
  return groups;
}

std::unique_ptr<optim::AdamW> make_optimizer(const nn::Module& m, const OptimConfig& t) {
  optim::AdamWOptions ao;
  ao.lr = t.lr;
  ao.beta1 = t.beta1;
  ao.beta2 = t.beta2;
  ao.eps = t.eps;
  ao.weight_decay = t.weight_decay;
  return std::make_unique<optim::AdamW>(param_groups(m, t), ao);
}

}  // namespace hmoe::train
