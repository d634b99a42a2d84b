/// @file
/// Language-model data: a token stream loaded from UTF-8 text files (bytes, vocab 256)
/// or pre-tokenised uint16/uint32 files, a train/validation split, and a seeded sampler
/// of random windows whose position is part of the training state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::data {

/// A token stream and its vocabulary size.
class TokenDataset {
 public:
  TokenDataset() = default;
  /// tokens (each below vocab_size).
  TokenDataset(std::vector<uint32_t> tokens, int64_t vocab_size);

  /// Concatenates the bytes of each file (a vocabulary of 256 unless given). A directory
  /// adds its regular files in name order. Empty or unreadable input, and a byte at or
  /// beyond the vocabulary (named with its file and offset), are errors.
  static TokenDataset from_text_files(const std::vector<std::string>& paths, int64_t vocab_size = 256);
  /// Little-endian uint16 (width 2) or uint32 (width 4) tokens. With vocab_size 0 the
  /// vocabulary is the largest id + 1; else an id at or beyond it is an error naming its
  /// byte offset.
  static TokenDataset from_token_file(const std::string& path, int width, int64_t vocab_size = 0);

  /// Splits off the last `val_fraction` of the stream (at least block + 1 tokens each).
  std::pair<TokenDataset, TokenDataset> split(double val_fraction, int64_t min_tokens) const;

  /// The number of tokens.
  int64_t size() const { return int64_t(tokens_.size()); }
  /// The vocabulary size.
  int64_t vocab_size() const { return vocab_size_; }
  /// The tokens.
  const std::vector<uint32_t>& tokens() const { return tokens_; }

 private:
  std::vector<uint32_t> tokens_;
  int64_t vocab_size_ = 0;
};

/// A batch of windows: inputs and next-token targets.
struct Batch {
  Tensor inputs;   ///< i64 [B, T]
  Tensor targets;  ///< i64 [B, T], inputs shifted by one
};

/// Random windows: window i of the stream starts at a Philox draw from (seed, i), so
/// the sequence depends only on the seed and the position, which resumes exactly.
class WindowSampler {
 public:
  /// Windows of block_size + 1 tokens of data, drawn from seed's stream.
  WindowSampler(const TokenDataset& data, int64_t block_size, uint64_t seed);
  /// The next batch_size windows.
  Batch next(int64_t batch_size);
  /// Windows drawn so far (part of the training state).
  uint64_t position() const { return position_; }
  /// Continues from window p.
  void set_position(uint64_t p) { position_ = p; }

 private:
  const TokenDataset* data_;
  int64_t block_;
  uint64_t seed_;
  uint64_t position_ = 0;
};

/// Every window of `block_size` in order (the last one may overlap), for evaluation.
std::vector<Batch> sequential_batches(const TokenDataset& data, int64_t block_size, int64_t batch_size,
                                      int64_t max_batches);

/// The text files of the default corpus (Debian's fortunes collection), or empty.
std::vector<std::string> default_corpus_files();

}  // namespace hmoe::data
