// The model's parameters in AdamW groups: with and without weight decay, and the
// hypernetwork in groups of its own, at train.hyper_lr_scale of the learning rate, when
// that scale is not 1. The trainer steps them together; a checkpoint stores each one's
// state under its name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/nn/module.h"
#include "models/optim/optimizer.h"
#include "models/train/config.h"

namespace hmoe::train {

struct ParamGroup {
  std::string name;  // decay | plain | hyper_decay | hyper_plain
  double lr_scale = 1;
  std::unique_ptr<optim::AdamW> opt;
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

 private:
  std::vector<ParamGroup> groups_;
};

}  // namespace hmoe::train
