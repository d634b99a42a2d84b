// Sampling text from a checkpoint (`hmoe generate`).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace hmoe::train {

struct GenerateOptions {
  std::string prompt;
  int64_t max_tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 40;  // 0: no top-k filter
  uint64_t seed = 0;
};
// The prompt, then each sampled token's byte as soon as it is made, handed to `out` (so a
// long generation shows from its first token; memory stays bounded whatever max_tokens).
void generate(const std::string& checkpoint_dir, const GenerateOptions& opts,
              const std::function<void(std::string_view)>& out);
// The prompt followed by the sampled continuation, as bytes.
std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& opts);

}  // namespace hmoe::train
