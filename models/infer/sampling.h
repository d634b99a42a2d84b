/// @file
/// Choosing the next token from a row's logits: greedy, or a draw at a temperature among
/// the top-k and top-p (nucleus) candidates, one Philox draw per token from the seed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/rng.h"

namespace hmoe::infer {

/// How a row's next token is chosen.
struct SamplingOptions {
  double temperature = 0.8;  ///< 0: greedy (the likeliest token, ties to the lowest id)
  int64_t top_k = 40;        ///< keep the k likeliest (0: all)
  double top_p = 1.0;        ///< then the fewest whose probabilities sum to >= top_p (1: all)
  uint64_t seed = 0;         ///< the seed of the row's draws
};
/// hmoe::Error naming the option unless temperature is finite and >= 0, top_k >= 0 and
/// top_p is in (0, 1].
void validate(const SamplingOptions& o);

/// One row's sampler: the n-th token sampled uses the Philox uniform (seed, n), so a row's
/// tokens depend on its logits and options only, never on the batch it shares.
class Sampler {
 public:
  /// A sampler with options o (validated).
  explicit Sampler(const SamplingOptions& o);
  /// The next token from one row's logits [V].
  int64_t next(std::span<const float> logits);

 private:
  SamplingOptions o_;
  Generator gen_;
  std::vector<int64_t> order_;
  std::vector<double> p_;
};

}  // namespace hmoe::infer
