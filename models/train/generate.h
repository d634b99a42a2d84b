/// @file
/// Sampling text from a byte-level checkpoint (`hmoe generate`), through infer::generate.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace hmoe::train {

/// What to sample and how (`hmoe generate`'s options).
struct GenerateOptions {
  std::string prompt;             ///< empty: the model starts from a newline
  int64_t max_tokens = 200;       ///< tokens (bytes) to generate
  double temperature = 0.8;       ///< 0: greedy
  int64_t top_k = 40;             ///< 0: no top-k filter
  uint64_t seed = 0;              ///< the sampling seed
  double top_p = 1.0;             ///< 1: no nucleus filter
  std::vector<std::string> stop;  ///< generation ends right after any of these byte strings
  int64_t window_keep = 0;        ///< see infer::Request
};
/// The prompt, then each sampled token's byte as soon as it is made, handed to `out` (so a
/// long generation shows from its first token; memory stays bounded whatever max_tokens).
void generate(const std::string& checkpoint_dir, const GenerateOptions& opts,
              const std::function<void(std::string_view)>& out);
/// The prompt followed by the sampled continuation, as bytes.
std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& opts);
/// Several prompts as one batch (opts.prompt unused): each prompt followed by its continuation.
std::vector<std::string> generate_texts(const std::string& checkpoint_dir, const std::vector<std::string>& prompts,
                                        const GenerateOptions& opts);

}  // namespace hmoe::train
