// The model's parameters in AdamW groups: with and without weight decay, and the
// hypernetwork in groups of its own, at train.hyper_lr_scale of the learning rate, when
// that scale is not 1. The trainer steps them together; a checkpoint stores each one's
// state under its name and its parameters' names.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/nn/module.h"
#include "models/optim/optimizer.h"
#include "models/train/config.h"

namespace hmoe::train {

struct ParamGroup {
  std::string name;  // decay | plain | hyper_decay | hyper_plain
  double lr_scale = 1;
  std::unique_ptr<optim::AdamW> opt;
  std::vector<std::string> params;  // the model's names of opt's parameters, in its order
};

class ParamGroups {
 public:
  ParamGroups() = default;
  // Build after the model's last move or cast (nn::Module::to).
  ParamGroups(const nn::Module& m, const OptimConfig& t);
  void set_lr(double lr);  // each group at lr times its scale
  void step();             // every group's update, then its gradients zeroed
  void zero_grad();        // the gradients dropped without an update (a step that was not finite)
  const std::vector<ParamGroup>& groups() const { return groups_; }
  std::vector<ParamGroup>& groups() { return groups_; }

  // Every group's optimiser state as "<group>.<parameter>.<what>" (what: exp_avg,
  // exp_avg_sq, master): keyed by the model's parameter names, so the same keys stand in
  // a checkpoint of any number of processes and expert shards gather and slice by name.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  // The parameter a state key belongs to ("" when the key is not one of ours).
  std::string parameter_of(const std::string& key) const;
  // Loads every group from such tensors (each group's entries, exactly) and step counts.
  // Errors name the group and what does not fit.
  void load_state(const std::map<std::string, Tensor>& state, const std::map<std::string, int64_t>& steps);

 private:
  std::vector<ParamGroup> groups_;
};

}  // namespace hmoe::train
