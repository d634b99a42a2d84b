// A training run's directory (train.out_dir): checkpoint/ (checkpoint.h), written every
// train.checkpoint_every steps and at the end, and metrics.jsonl (metrics.h); resuming
// a run reads them back.
#pragma once

#include <filesystem>

#include "models/hypermoe/lm.h"
#include "models/train/checkpoint.h"
#include "models/train/config.h"
#include "models/train/param_groups.h"

namespace hmoe::train {

class RunDir {
 public:
  explicit RunDir(const std::filesystem::path& out_dir);  // creates the directory
  const std::filesystem::path& checkpoint_dir() const { return checkpoint_; }
  std::filesystem::path metrics_path() const { return out_ / "metrics.jsonl"; }

  // Resuming, first: puts back the checkpoint an interrupted save left aside; true if it did.
  bool restore_interrupted_save() const;
  // Then continues the run saved here: checks that its checkpoint was written with `cfg`
  // (up to the settings that leave the results as they are), loads its weights into `m`
  // and its optimiser state into `groups`, and drops the metrics logged after it.
  // Returns where the loop stood.
  TrainState resume(const Config& cfg, model::LanguageModel& m, ParamGroups& groups) const;
  void save(const Config& cfg, const model::LanguageModel& m, const ParamGroups& groups, const TrainState& st) const;

 private:
  std::filesystem::path out_, checkpoint_;
};

}  // namespace hmoe::train
