/// @file
/// Module: the base of every layer and model. Parameters and children are registered
/// by name, so every parameter has a hierarchical name ("blocks.0.attn.qkv.weight");
/// train/eval mode propagates; state dicts save and load strictly. A submodule may be
/// shared by several parents and is then listed once (see Module).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"
#include "models/nn/state_dict.h"

namespace hmoe::nn {

/// A parameter of which this process holds rows [first, first + rows) along dim 0 of the
/// whole, `total` rows long, the other rows living on other processes (expert
/// parallelism: each rank holds a contiguous block of every MoE layer's experts). Its
/// state-dict entry is the local rows; checkpoints gather and slice by this.
struct RowShard {
  int64_t first = 0;  ///< first row held, along dim 0 of the whole
  int64_t rows = 0;   ///< rows held here
  int64_t total = 0;  ///< rows of the whole parameter
};

/// Shared submodules. A module instance may be registered under several parents (the
/// hypernetwork every HyperMoE layer of a model uses). Every module that uses a submodule
/// registers it, so each one alone (a layer built on its own) lists all it trains; every
/// traversal (named_parameters, parameters, state_dict, parameter_shards, to, zero_grad,
/// train) then visits each instance once, under the first name it is reached by, depth
/// first in registration order. A model registers what it shares before the layers that
/// use it: the language model lists its hypernetwork once as "hyper.*", and a
/// HyperMoEFFN built alone lists its own as "hyper.*" too.
class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Registers t (made to require grad) as a parameter; returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  /// The same for t holding rows of a larger parameter.
  Tensor register_parameter(const std::string& name, Tensor t, RowShard shard);
  /// Registers a tensor saved in the state dict but not trained.
  Tensor register_buffer(const std::string& name, Tensor t);
  /// Registers m as the child `name` (a submodule; it may already be another's); returns it.
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  /// In registration order, depth first.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  /// The parameters alone, in the order of named_parameters().
  std::vector<Tensor> parameters() const;
  /// Parameters and buffers, in registration order (depth first): the tensors themselves.
  StateDict state_dict() const;
  /// Copies each entry into the tensor of its name. strict: every key must be present and
  /// match in shape and dtype, and no key may be unknown. (A std::map, a safetensors
  /// file's tensors, converts.)
  void load_state_dict(const StateDict& state, bool strict = true);
  int64_t num_parameters() const;  ///< of this process's tensors
  /// The sharded parameters by hierarchical name (empty when every parameter is whole).
  std::map<std::string, RowShard> parameter_shards() const;
  /// Drops every parameter's gradient.
  void zero_grad();

  /// Moves every parameter and buffer to d, or casts the floating ones to dt, in place:
  /// the tensors keep their identity (fields and optimizers holding them see the new
  /// data); gradients are dropped. Build an optimizer after these calls.
  void to(Device d);
  /// Casts every floating parameter and buffer to dt in place (see to(Device)).
  void to(DType dt);
  Device device() const;  ///< of the first parameter or buffer (cpu if none)
  DType dtype() const;    ///< of the first floating parameter (f32 if none)

  /// Calls fn on this module and every submodule, each once (a shared one at its first
  /// place), depth first in registration order, a parent before its children.
  void apply(const std::function<void(Module&)>& fn);

  /// Sets training mode (dropout and router noise on) for this module and every submodule.
  void train(bool on = true);
  /// Evaluation mode: train(false).
  void eval() { train(false); }
  /// Whether the module is in training mode.
  bool is_training() const { return training_; }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  /// Each module once (`seen`): see "Shared submodules" above.
  void collect(const std::string& prefix, bool buffers, std::vector<std::pair<std::string, Tensor>>& out,
               std::set<const Module*>& seen) const;
  void collect_shards(const std::string& prefix, std::map<std::string, RowShard>& out,
                      std::set<const Module*>& seen) const;
  std::vector<std::pair<std::string, Tensor>> collect_all(bool buffers) const;
  void apply(const std::function<void(Module&)>& fn, std::set<const Module*>& seen);
  static void check_name(const std::string& name);

  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::map<std::string, RowShard> shards_;  ///< by parameter name
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace hmoe::nn
