/// @file
/// What a training run prints on stdout (nothing when quiet): the model and data summary,
/// a progress line every train.log_every steps (rewritten in place on a terminal), the
/// validation losses, resume notes and the profile summary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "engine/profiler.h"
#include "models/hypermoe/config.h"
#include "models/train/metrics.h"

namespace hmoe::train {

/// The run's output on stdout (see the file's description); silent when quiet.
class Progress {
 public:
  /// quiet: print nothing; tty: rewrite the progress line in place.
  Progress(bool quiet, bool tty) : quiet_(quiet), tty_(tty) {}
  /// Notes a checkpoint put back from an interrupted save.
  void restored(const std::filesystem::path& checkpoint_dir) const;
  /// Notes the checkpoint a run resumed from, at `step`.
  void resumed(const std::filesystem::path& checkpoint_dir, int64_t step) const;
  /// The model's and the data's sizes.
  void summary(const model::ModelConfig& m, int64_t parameters, int64_t train_tokens, int64_t val_tokens) const;
  /// Notes a vocabulary taken from a token file.
  void vocab_from_data(int64_t vocab_size, const std::string& token_file) const;
  void skipped(int64_t step, const std::string& what) const;  ///< a step not finite, its update dropped
  /// Notes a run already at (or past) the step it should stop at.
  void nothing_to_do(int64_t step, int64_t stop) const;
  /// One progress line for a step (every train.log_every steps).
  void step(const StepMetrics& s, int64_t total_steps, double eta_seconds) const;
  /// A validation loss.
  void validation(int64_t step, double loss) const;
  /// The profile's summary and where its trace went.
  void profile(const Profiler& p, const std::string& trace_path, int64_t steps) const;

 private:
  bool quiet_, tty_;
};

}  // namespace hmoe::train
