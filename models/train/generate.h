// Sampling text from a checkpoint (`hmoe generate`).
#pragma once

#include <cstdint>
#include <string>

namespace hmoe::train {

struct GenerateOptions {
  std::string prompt;
  int64_t max_tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 40;  // 0: no top-k filter
  uint64_t seed = 0;
};
// The prompt followed by the sampled continuation, as bytes.
std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& opts);

}  // namespace hmoe::train
