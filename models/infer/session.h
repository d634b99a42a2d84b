/// @file
/// Inference with a key/value cache: infer::Model (a loaded language model, immutable and
/// shared) and infer::Session (one batch's cache and lengths: prefill, then one-token
/// decode steps). Thread safety: one Model may serve any number of threads at once, each
/// with its own Sessions; a Session is used by one thread at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/hypermoe/lm.h"

namespace hmoe::infer {

/// A language model loaded for inference: immutable, shared by any number of threads.
class Model {
 public:
  /// A checkpoint's model (train::load_checkpoint_model: config from the file, memory
  /// checked, weights finite) on the config's device and precision. `what` begins errors.
  static std::shared_ptr<const Model> load(const std::filesystem::path& checkpoint_dir,
                                           const std::string& what = "inference");
  /// Takes a built model over (put in eval mode; nobody else may change it afterwards).
  explicit Model(std::unique_ptr<model::LanguageModel> lm);

  /// The model's configuration.
  const model::ModelConfig& config() const { return lm_->config(); }
  /// The device its weights are on.
  Device device() const { return device_; }
  /// An empty key/value cache for batch rows of capacity slots.
  model::KvCache make_cache(int64_t batch, int64_t capacity) const { return lm_->make_cache(batch, capacity); }
  /// LanguageModel::forward_cached under NoGradGuard; logits as f32 on the CPU.
  Tensor forward_cached(const Tensor& ids, const Tensor& pos, const std::vector<int64_t>& start, model::KvCache& cache,
                        const std::vector<int64_t>& at) const;

 private:
  std::unique_ptr<model::LanguageModel> lm_;  ///< only its read-only eval forward is called
  Device device_;
};

/// `batch` rows, each a sequence of up to block_size tokens whose keys and values are
/// cached. Positions are learned and absolute, so a full row cannot slide by one: it is
/// started over (prefill_row) with the tokens it should keep.
class Session {
 public:
  /// A session of batch rows over model (which it keeps alive).
  Session(std::shared_ptr<const Model> model, int64_t batch);

  /// The number of rows.
  int64_t batch() const { return int64_t(length_.size()); }
  /// The tokens row holds.
  int64_t length(int64_t row) const { return length_.at(size_t(row)); }
  /// The model.
  const Model& model() const { return *model_; }

  /// Every row starts over with its prompt (1 .. block_size tokens, ids < vocab; lengths
  /// may differ). Returns f32 [B, V]: the logits for the token after each prompt.
  Tensor prefill(const std::vector<std::vector<int64_t>>& prompts);
  /// Row `row` alone starts over with `tokens`; returns its f32 [V] logits.
  Tensor prefill_row(int64_t row, const std::vector<int64_t>& tokens);
  /// Appends tokens[b] to row b (which must be shorter than block_size), or leaves row b
  /// as it is where tokens[b] is -1; returns f32 [B, V], the next-token logits of the rows
  /// that took a token (the others' rows are meaningless).
  Tensor decode(const std::vector<int64_t>& tokens);

 private:
  void check_tokens(const std::vector<int64_t>& tokens, const char* what) const;

  std::shared_ptr<const Model> model_;
  model::KvCache cache_;  ///< block_size + 1 slots: a row left as it is writes its step's key past its tokens
  std::vector<int64_t> length_;
};

}  // namespace hmoe::infer
