/// @file
/// Generation for a batch of requests: each request's prompt, sampling options, token
/// budget and stop sequences; prefill once, then one cached decode step per token.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "models/infer/sampling.h"
#include "models/infer/session.h"

namespace hmoe::infer {

/// One row of a generate() batch: its prompt, sampling, token budget and stops.
struct Request {
  std::vector<int64_t> prompt;  ///< 1 .. block_size tokens
  SamplingOptions sampling;     ///< how its tokens are chosen
  int64_t max_tokens = 200;     ///< the most tokens to generate
  /// Generation ends right after the output ends with one of these (it stays in the output).
  std::vector<std::vector<int64_t>> stop;
  /// When the row holds block_size tokens, it starts over (a prefill) with its last
  /// window_keep tokens (0: half the block size); block_size recomputes a full window for
  /// every further token, as generation without a cache would.
  int64_t window_keep = 0;
  /// false: the tokens reach on_token only, so an endless stream holds bounded memory.
  bool keep_output = true;
};
/// hmoe::Error naming the bad field (the prompt's tokens are the Session's to check).
void validate(const Request& r, int64_t block_size);

/// Why a row stopped.
enum class StopReason { max_tokens, stop_sequence };
/// What generate() returns for one request.
struct Completion {
  std::vector<int64_t> tokens;                 ///< the generated tokens, without the prompt (if keep_output)
  int64_t generated = 0;                       ///< tokens generated (also when not kept)
  StopReason reason = StopReason::max_tokens;  ///< why it stopped
};

/// Each request is a row of one batch; on_token(row, token) sees every token as it is made.
/// A row's tokens are those it would get alone (up to the rounding of batched products).
std::vector<Completion> generate(const std::shared_ptr<const Model>& model, const std::vector<Request>& requests,
                                 const std::function<void(int64_t row, int64_t token)>& on_token = {});

}  // namespace hmoe::infer
