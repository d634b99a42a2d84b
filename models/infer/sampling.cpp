// The sampler: candidates ordered by logit (ties by id), cut by top-k then top-p,
// softmax(logits / temperature) over them, and one uniform draw per token.
#include "models/infer/sampling.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace hmoe::infer {

void validate(const SamplingOptions& o) {
  HMOE_CHECK(std::isfinite(o.temperature) && o.temperature >= 0,
             "sampling: temperature must be a finite number >= 0, got ", o.temperature);
  HMOE_CHECK(o.top_k >= 0, "sampling: top_k must be >= 0 (0: all tokens), got ", o.top_k);
  HMOE_CHECK(o.top_p > 0 && o.top_p <= 1, "sampling: top_p must be in (0, 1], got ", o.top_p);
}

Sampler::Sampler(const SamplingOptions& o) : o_(o), gen_(o.seed) { validate(o); }

int64_t Sampler::next(std::span<const float> l) {
  HMOE_CHECK(!l.empty(), "Sampler::next: no logits");
  const auto higher = [&](int64_t a, int64_t b) {
    return l[size_t(a)] > l[size_t(b)] || (l[size_t(a)] == l[size_t(b)] && a < b);
  };
  if (o_.temperature == 0) {
    int64_t best = 0;
    for (int64_t j = 1; j < int64_t(l.size()); ++j)
      if (higher(j, best)) best = j;
    return best;
  }
  order_.resize(l.size());
  for (size_t j = 0; j < order_.size(); ++j) order_[j] = int64_t(j);
  const size_t keep = o_.top_k > 0 ? std::min(size_t(o_.top_k), order_.size()) : order_.size();
  std::partial_sort(order_.begin(), order_.begin() + std::ptrdiff_t(keep), order_.end(), higher);
  const double mx = l[size_t(order_[0])];
  double z = 0;
  p_.resize(keep);
  for (size_t j = 0; j < keep; ++j) z += p_[j] = std::exp((double(l[size_t(order_[j])]) - mx) / o_.temperature);
  size_t n = keep;
  if (o_.top_p < 1) {  // the shortest prefix holding top_p of the mass
    double mass = 0;
    for (n = 0; n < keep && mass < o_.top_p * z; ++n) mass += p_[n];
    z = mass;
  }
  const double u = philox_uniform_f64(o_.seed, gen_.advance(1), 0) * z;
  double acc = 0;
  for (size_t j = 0; j < n; ++j) {
    acc += p_[j];
    if (u <= acc) return order_[j];
  }
  return order_[n - 1];
}

}  // namespace hmoe::infer
