// AdapterCache: look up under a shared lock, generate what is missing unlocked, insert.
#include "models/hypermoe/adapter_cache.h"

#include <algorithm>
#include <mutex>

#include "ops/index.h"

namespace hmoe::model {

AdapterWeights AdapterCache::get(const std::vector<int64_t>& patterns, const Generate& generate) {
  std::vector<int64_t> missing;
  {
    const std::shared_lock lock(mu_);
    for (int64_t p : patterns)
      if (!entries_.count(p) && std::find(missing.begin(), missing.end(), p) == missing.end()) missing.push_back(p);
  }
  if (!missing.empty()) {
    // Two threads may generate the same pattern at once; both get the same values (the
    // model does not change), and the first insert is kept.
    const AdapterWeights g = generate(missing);
    const std::unique_lock lock(mu_);
    for (size_t i = 0; i < missing.size(); ++i) {
      const int64_t r = int64_t(i);
      entries_.try_emplace(
          missing[i], Entry{g.w_down.select(0, r), g.b_down.select(0, r), g.w_up.select(0, r), g.b_up.select(0, r)});
    }
  }
  std::vector<Tensor> wd, bd, wu, bu;
  {
    const std::shared_lock lock(mu_);
    for (int64_t p : patterns) {
      const Entry& e = entries_.at(p);
      wd.push_back(e.w_down), bd.push_back(e.b_down), wu.push_back(e.w_up), bu.push_back(e.b_up);
    }
  }
  if (patterns.size() == 1)  // a decode step's usual case: views, no copy
    return {wd[0].unsqueeze(0), bd[0].unsqueeze(0), wu[0].unsqueeze(0), bu[0].unsqueeze(0)};
  return {stack(wd, 0), stack(bd, 0), stack(wu, 0), stack(bu, 0)};
}

size_t AdapterCache::size() const {
  const std::shared_lock lock(mu_);
  return entries_.size();
}

}  // namespace hmoe::model
