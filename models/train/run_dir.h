/// @file
/// A training run's directory (train.out_dir): checkpoint/ (checkpoint.h), written every
/// train.checkpoint_every steps and at the end, metrics.jsonl (metrics.h) and train.lock,
/// which the trainer holds while it runs; resuming a run reads them back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include "engine/io/file.h"
#include "models/hypermoe/lm.h"
#include "models/optim/optimizer.h"
#include "models/train/checkpoint.h"
#include "models/train/config.h"

namespace hmoe::train {

/// A training run's directory, locked while the run trains (see the file's description).
class RunDir {
 public:
  /// How a run starts in its directory: afresh (refused where a run already is), resuming
  /// the run there, or replacing it (its checkpoint and metrics deleted first).
  enum class Start { fresh, resume, overwrite };

  /// Creates the directory and takes its lock (train.lock, flock): a second trainer on the
  /// same directory is refused with the process that holds it, and so is a fresh start
  /// over an existing run. Also proves the directory writable before any step. Only the
  /// writer (rank 0 of several processes, which writes the run's files) does: another
  /// rank's RunDir names the paths and reads the checkpoint.
  RunDir(const std::filesystem::path& out_dir, Start start, bool writer = true);
  /// Whether this process writes the run's files (holds the lock).
  bool writer() const { return lock_.has_value(); }
  /// The run directory.
  const std::filesystem::path& dir() const { return out_; }
  /// Its checkpoint directory.
  const std::filesystem::path& checkpoint_dir() const { return checkpoint_; }
  /// Its metrics log.
  std::filesystem::path metrics_path() const { return out_ / "metrics.jsonl"; }

  /// Refuses, before the first step, a file system without room for one more checkpoint
  /// of `bytes` (a save writes the new one beside the last before removing it). Writer only.
  void check_room(double bytes) const;

  /// Resuming, first (the writer, before the others read): puts back the checkpoint an
  /// interrupted save left aside; true if it did.
  bool restore_interrupted_save() const;
  /// Then continues the run saved here: checks that its checkpoint was written with `cfg`
  /// (up to the settings that leave the results as they are; each differing key named with
  /// both values) and that its two files belong together, loads its weights into `m` and
  /// its optimiser state into `opt` (a model sharing its experts takes its rows), and
  /// the writer drops the metrics logged after it. Returns where the loop stood.
  TrainState resume(const Config& cfg, model::LanguageModel& m, optim::Optimizer& opt) const;
  /// Writer only: the checkpoint of `content` (checkpoint_content, gathered by every rank).
  void save(const Config& cfg, const CheckpointContent& content, const TrainState& st) const;

 private:
  std::filesystem::path out_, checkpoint_;
  std::optional<io::FileLock> lock_;  ///< held by the writer
};

}  // namespace hmoe::train
