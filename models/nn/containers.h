/// @file
/// Containers of modules: ModuleList (registered under their indices, iterable) and
/// Sequential (applied in order, each one's forward(const Tensor&) feeding the next).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "models/nn/module.h"

namespace hmoe::nn {

/// Modules under the names "0", "1", ... (their parameters "0.weight", ...). A module
/// added twice, or shared with another parent, is listed once (see Module).
class ModuleList : public Module {
 public:
  /// Registers m under the next index and appends it; returns it.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(items_.size()), m);
    items_.push_back(m);
    return m;
  }
  /// The number of modules.
  size_t size() const { return items_.size(); }
  /// Whether there are none.
  bool empty() const { return items_.empty(); }
  /// Module i (an hmoe::Error when out of range).
  const std::shared_ptr<Module>& operator[](size_t i) const {
    HMOE_CHECK(i < items_.size(), "ModuleList: index ", i, " out of range for ", items_.size(), " modules");
    return items_[i];
  }
  /// Module i as an M; an hmoe::Error when it is not one.
  template <typename M>
  std::shared_ptr<M> at(size_t i) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[i]);
    HMOE_CHECK(m != nullptr, "ModuleList: module ", i, " is not of the type asked for");
    return m;
  }
  /// The first module.
  auto begin() const { return items_.begin(); }
  /// Past the last module.
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

/// Modules applied in order: forward(x) is ... m1->forward(m0->forward(x)). Any module
/// with a `forward(const Tensor&)` returning a Tensor fits (Linear, LayerNorm, MLP, the
/// FFN layers' forward without a Generator, or a Sequential); named as in ModuleList.
class Sequential : public Module {
 public:
  /// Registers m under the next index and appends it to the chain; returns it.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    HMOE_CHECK(m != nullptr, "Sequential: null module");
    register_module(std::to_string(steps_.size()), m);
    steps_.push_back([raw = m.get()](const Tensor& x) { return raw->forward(x); });
    return m;
  }
  /// The number of modules.
  size_t size() const { return steps_.size(); }
  /// Applies every module in order.
  Tensor forward(const Tensor& x) const {
    Tensor y = x;
    for (const auto& f : steps_) y = f(y);
    return y;
  }

 private:
  /// Each step calls its module, which this module keeps alive as a registered child.
  std::vector<std::function<Tensor(const Tensor&)>> steps_;
};

}  // namespace hmoe::nn
