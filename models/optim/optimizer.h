/// @file
/// Optimisers (SGD with momentum, AdamW), learning-rate schedules and global-norm
/// clipping, on any device (the fused updates of ops/optim.h). Parameters come in groups
/// with their own learning-rate scale and weight decay. Updates run in place under
/// no-grad; bf16/f16 parameters get f32 master weights; state is exposed as named
/// tensors (and saved to a safetensors file) so checkpoints can restore it exactly.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"
#include "models/nn/state_dict.h"

namespace hmoe::optim {

/// Parameters updated together with their own learning-rate scale and weight decay (as
/// libtorch's OptimizerParamGroup). Their state is keyed "<name>.<parameter>.<what>"
/// ("<parameter>.<what>" for a group with no name), the parameter by its entry in
/// param_names, or by its index in the group when param_names is empty.
struct ParamGroup {
  std::string name;                      ///< the group's name, the prefix of its state keys ("" for none)
  std::vector<Tensor> params;            ///< the parameters
  std::vector<std::string> param_names;  ///< empty, or one per parameter
  double lr_scale = 1.0;                 ///< the group's learning rate: the optimiser's lr() times this
  std::optional<double> weight_decay;    ///< unset: the optimiser's options'
};

/// The base of the optimisers: parameter groups, the learning rate, the step count and
/// the state as named tensors.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// One update of every group, in group order (a parameter with no gradient is skipped).
  virtual void step() = 0;
  /// Drops every parameter's gradient.
  void zero_grad();
  /// Sets the learning rate.
  void set_lr(double lr) { lr_ = lr; }  ///< each group at lr times its lr_scale
  /// The learning rate.
  double lr() const { return lr_; }
  /// Steps taken.
  int64_t step_count() const { return steps_; }
  /// The parameter groups.
  const std::vector<ParamGroup>& param_groups() const { return groups_; }

  /// Every state tensor (what: exp_avg, exp_avg_sq, momentum; master for bf16/f16
  /// parameters), keyed as ParamGroup says: group by group, each parameter's, then the
  /// group's masters. The tensors are the optimiser's own (a copy_ into one changes it).
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  /// The name of the parameter a state key belongs to ("" when the key is none of ours).
  std::string parameter_of(const std::string& key) const;
  /// Loads exactly the keys state_tensors() has (copies; shapes and dtypes must match) and
  /// the step count; an hmoe::Error names the key or group that does not fit.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

  /// state_tensors() and the step count as "step" (an i64 scalar): what save() writes.
  nn::StateDict state_dict() const;
  /// Loads what state_dict() gives (as load_state).
  void load_state_dict(const nn::StateDict& state);
  /// The state dict as a safetensors file, and back (an optimiser over the same groups).
  void save(const std::string& path) const;
  /// Loads a file save() wrote.
  void load(const std::string& path);

 protected:
  /// Checks every group; lr: the optimiser's options' learning rate.
  Optimizer(std::vector<ParamGroup> groups, double lr);
  /// A per-parameter state tensor of the derived optimiser, "<what>", for every parameter
  /// (in group order); registered once, in the constructor.
  void add_state(const std::string& what, std::vector<Tensor>* per_param) { slots_.emplace_back(what, per_param); }
  /// Calls update(k, group, param, master) for every parameter with a gradient: k its
  /// index over all groups, master its f32 master weights (undefined for f32/f64).
  template <typename F>
  void for_each_update(F&& update) {
    size_t k = 0;
    for (const ParamGroup& g : groups_)
      for (const Tensor& p : g.params) {
        if (p.grad().defined()) update(k, g, p, masters_[k]);
        ++k;
      }
  }
  /// The group's learning rate: lr() times its lr_scale.
  double group_lr(const ParamGroup& g) const { return lr_ * g.lr_scale; }

  std::vector<ParamGroup> groups_;  ///< the parameter groups
  double lr_ = 1e-3;                ///< the learning rate
  int64_t steps_ = 0;               ///< steps taken

 private:
  /// The key of a parameter's state (k: its index over all groups).
  std::string state_key(size_t group, size_t index, const std::string& what) const;

  /// f32 master weights of bf16/f16 parameters (undefined where the parameter is f32/f64):
  /// updates run on the master, the parameter receives its rounded copy.
  std::vector<Tensor> masters_;
  std::vector<std::pair<std::string, std::vector<Tensor>*>> slots_;
};

/// One group of all `params`, unnamed: state keys "<index>.<what>".
std::vector<ParamGroup> one_group(std::vector<Tensor> params);

/// SGD's settings: learning rate, momentum (PyTorch's rule), dampening, weight decay.
struct SGDOptions {
  /// @{
  /// Learning rate, momentum, dampening and weight decay (added to the gradient).
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  /// @}
  bool nesterov = false;  ///< Nesterov momentum
};

/// SGD with momentum (PyTorch's rule; see ops/optim.h's SGDStep).
class SGD final : public Optimizer {
 public:
  /// Over one group of params.
  SGD(std::vector<Tensor> params, SGDOptions o) : SGD(one_group(std::move(params)), o) {}
  /// Over parameter groups.
  SGD(std::vector<ParamGroup> groups, SGDOptions o);
  void step() override;

 private:
  SGDOptions o_;
  std::vector<Tensor> buf_;  ///< momentum buffers (f64 for f64 params, else f32)
};

/// AdamW's settings.
struct AdamWOptions {
  /// @{
  /// Learning rate, moment decay rates, epsilon and decoupled weight decay.
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  /// @}
};

/// AdamW (Loshchilov & Hutter): decoupled decay p -= lr*wd*p, bias-corrected moments
/// kept in f32 (f64 for f64 parameters), one fused kernel per parameter on its device.
class AdamW final : public Optimizer {
 public:
  /// Over one group of params.
  AdamW(std::vector<Tensor> params, AdamWOptions o) : AdamW(one_group(std::move(params)), o) {}
  /// Over parameter groups.
  AdamW(std::vector<ParamGroup> groups, AdamWOptions o);
  void step() override;

 private:
  AdamWOptions o_;
  std::vector<Tensor> m_, v_;
};

/// Linear warm-up from 0 to lr over `warmup` steps, then cosine decay to min_lr at `total`.
double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);

/// The sum of the squares of every element of `tensors`, accumulated in f64 in their order
/// (one host read per device). Finite exactly when every element is: the largest half or
/// float squared is far below f64's range.
double sum_of_squares(const std::vector<Tensor>& tensors);

/// Scales every gradient so their global L2 norm is at most max_norm; returns the norm
/// before clipping (computed in f64, in parameter order).
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace hmoe::optim
