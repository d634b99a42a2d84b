/// @file
/// Training a language model from a Config: the step loop (AdamW, warm-up + cosine,
/// clipping, accumulation) with periodic evaluation, metrics, checkpoints and exact
/// resume. Evaluating a checkpoint: evaluate.h; sampling from one: generate.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"

#include "models/train/config.h"

namespace hmoe::train {

/// How run_training runs: resume or start afresh, output, signals, profiling, processes.
struct RunOptions {
  bool resume = false;           ///< continue from `<out_dir>/checkpoint` (an error if there is none)
  bool overwrite = false;        ///< replace the run in out_dir (else a fresh run there is refused)
  bool stop_on_signals = false;  ///< SIGINT / SIGTERM stop the run with a checkpoint (InterruptGuard)
  bool progress_tty = false;     ///< rewrite one progress line instead of printing lines
  bool quiet = false;            ///< no progress output at all
  int64_t stop_at = -1;          ///< stop (and checkpoint) after this many total steps; -1: train.steps
  /// Profile `profile_steps` steps (from this run's second step: the first warms the pools)
  /// with hmoe::Profiler: a Chrome trace JSON written to profile_path, the per-op summary
  /// printed (unless quiet). Empty: no profiling.
  std::string profile_path;
  int64_t profile_steps = 5;           ///< steps to profile
  bool profile_emu_counters = false;  ///< ProfilerOptions::emu_counters for those steps
  /// Training over several processes (dist::Environment's world; null or size 1: this
  /// process alone): every rank calls run_training with the same config and options;
  /// rank 0 writes the run's files and prints, every rank steps. See DistConfig.
  std::shared_ptr<dist::Communicator> world;
};

/// What run_training reports.
struct TrainResult {
  int64_t steps = 0;                 ///< steps completed in total (including resumed ones)
  int interrupted_by = 0;            ///< the signal that stopped the run (its checkpoint saved), or 0
  std::string checkpoint_dir;        ///< where the run's checkpoint is
  std::vector<double> train_losses;  ///< LM loss of every step run by this call
  double last_val_loss = 0;          ///< NaN if never evaluated
  double tokens_per_second = 0;      ///< of the whole job
  int64_t num_parameters = 0;        ///< of the whole model
};

/// Trains a model as config says: builds (or resumes) the run in train.out_dir, steps,
/// evaluates, saves checkpoints and metrics, and returns what happened. Errors (bad config,
/// unreadable data, a refused run directory, a non-finite step under stop) are hmoe::Error.
TrainResult run_training(const Config& config, const RunOptions& opts);

}  // namespace hmoe::train
