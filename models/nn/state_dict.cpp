// StateDict's insertion and lookup.
#include "models/nn/state_dict.h"

#include "engine/error.h"

namespace hmoe::nn {

StateDict::StateDict(std::vector<Item> items) {
  items_.reserve(items.size());
  for (auto& [n, t] : items) insert(n, std::move(t));
}

StateDict::StateDict(const std::map<std::string, Tensor>& m) {
  for (const auto& [n, t] : m) insert(n, t);
}

void StateDict::insert(const std::string& name, Tensor t) {
  HMOE_CHECK(index_.emplace(name, items_.size()).second, "StateDict: the name '", name, "' is there twice");
  items_.emplace_back(name, std::move(t));
}

const Tensor* StateDict::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

const Tensor& StateDict::at(const std::string& name) const {
  const Tensor* t = find(name);
  HMOE_CHECK(t != nullptr, "StateDict: no tensor named '", name, "'");
  return *t;
}

}  // namespace hmoe::nn
