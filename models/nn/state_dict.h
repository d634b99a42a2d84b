/// @file
/// StateDict: named tensors in a fixed order, looked up by name: what Module::state_dict()
/// returns and load_state_dict() takes, and the optimisers' state the same way.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::nn {

/// The order is the insertion order: a module's is its registration order, depth first
/// (the same on every run); one made from a std::map (a safetensors file's tensors) is in
/// name order. Names are unique.
class StateDict {
 public:
  /// A name and its tensor.
  using Item = std::pair<std::string, Tensor>;
  /// Empty.
  StateDict() = default;
  /// The items in their order (names must be unique).
  StateDict(std::vector<Item> items);                 // NOLINT(google-explicit-constructor): a list converts
  /// A map's items, in name order.
  StateDict(const std::map<std::string, Tensor>& m);  // NOLINT(google-explicit-constructor): so does a map

  /// Adds t under name; a name already present is an hmoe::Error.
  void insert(const std::string& name, Tensor t);
  /// Whether a tensor is stored under name.
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// The tensor under name, or null.
  const Tensor* find(const std::string& name) const;
  /// The tensor under name; an hmoe::Error naming it when absent.
  const Tensor& at(const std::string& name) const;

  /// The number of entries.
  size_t size() const { return items_.size(); }
  /// Whether there are none.
  bool empty() const { return items_.empty(); }
  /// The first item, in order.
  auto begin() const { return items_.begin(); }
  /// Past the last item.
  auto end() const { return items_.end(); }
  /// Every item, in order.
  const std::vector<Item>& items() const { return items_; }

 private:
  std::vector<Item> items_;
  std::map<std::string, size_t> index_;  ///< name -> position in items_
};

}  // namespace hmoe::nn
