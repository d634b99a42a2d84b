/// @file
/// metrics.jsonl, a training run's log: one JSON object a line, for every step
/// ({"step", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "expert_fraction"},
/// and "skipped": true for a step whose update was dropped as not finite) and every
/// evaluation ({"step", "val_loss", "val_perplexity"}); "step" counts the steps done. A
/// value that is not finite is written null, so every line is valid JSON.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "engine/io/file.h"

namespace hmoe::train {

/// What one optimiser step reports.
struct StepMetrics {
  int64_t step = 0;  ///< steps done, this one included
  /// @{
  /// The LM loss and the routers' weighted aux loss.
  double lm_loss = 0, aux_loss = 0;  ///< means over the micro-batches
  /// @}
  /// @{
  /// The step's learning rate and the gradient's global norm.
  double lr = 0, grad_norm = 0;  ///< grad_norm: the global norm before clipping
  /// @}
  double tokens_per_s = 0;                          ///< since the start of this run
  std::vector<std::vector<int64_t>> expert_counts;  ///< per MoE layer: tokens routed to each expert
  bool finite = true;                               ///< the losses and the gradient norm are finite
  bool skipped = false;                             ///< not finite, and its update dropped
};

/// Each line is written at once, every write checked: a full disk is an error that says
/// why, not a silently short log.
class MetricsWriter {
 public:
  /// Appends to the file (a resumed run) or starts it afresh.
  MetricsWriter(const std::filesystem::path& path, bool append);
  void step(const StepMetrics& m);  ///< expert counts written as fractions of the layer's tokens
  /// Writes an evaluation's line.
  void eval(int64_t step, double val_loss);
  /// Makes what was written durable (before a checkpoint that a resume trims the log to).
  void sync();

 private:
  io::AppendFile out_;
};

/// On resume: keeps the lines of the steps up to `step` (the checkpoint's), dropping those
/// logged after it (to be run again) and a line cut short, so that no step is logged twice.
/// The file is replaced atomically (io::write_file_atomic): a failure leaves it whole.
void trim_metrics(const std::filesystem::path& path, int64_t step);

}  // namespace hmoe::train
