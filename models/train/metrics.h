// metrics.jsonl, a training run's log: one JSON object a line, for every step
// ({"step", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "expert_fraction"})
// and every evaluation ({"step", "val_loss", "val_perplexity"}); "step" counts the steps
// done.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

namespace hmoe::train {

// What one optimiser step reports.
struct StepMetrics {
  int64_t step = 0;                                 // steps done, this one included
  double lm_loss = 0, aux_loss = 0;                 // means over the micro-batches
  double lr = 0, grad_norm = 0;                     // grad_norm: before clipping (0 without clipping)
  double tokens_per_s = 0;                          // since the start of this run
  std::vector<std::vector<int64_t>> expert_counts;  // per MoE layer: tokens routed to each expert
};

class MetricsWriter {
 public:
  // Appends to the file (a resumed run) or starts it afresh.
  MetricsWriter(const std::filesystem::path& path, bool append);
  void step(const StepMetrics& m);  // expert counts written as fractions of the layer's tokens
  void eval(int64_t step, double val_loss);
  void flush();

 private:
  std::ofstream out_;
};

// On resume: keeps the lines of the steps up to `step` (the checkpoint's), dropping those
// logged after it (to be run again) and a line cut short, so that no step is logged twice.
void trim_metrics(const std::filesystem::path& path, int64_t step);

}  // namespace hmoe::train
