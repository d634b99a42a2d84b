// The training application's library side: train a language model from a Config
// (with evaluation, metrics, checkpoints and exact resume), evaluate a checkpoint,
// and sample text from one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/train/config.h"

namespace hmoe::train {

struct RunOptions {
  bool resume = false;        // continue from <out_dir>/checkpoint (an error if there is none)
  bool progress_tty = false;  // rewrite one progress line instead of printing lines
  bool quiet = false;         // no progress output at all
  int64_t stop_at = -1;       // stop (and checkpoint) after this many total steps; -1: train.steps
  // Profile `profile_steps` steps (from this run's second step: the first warms the pools)
  // with hmoe::Profiler: a Chrome trace JSON written to profile_path, the per-op summary
  // printed (unless quiet). Empty: no profiling.
  std::string profile_path;
  int64_t profile_steps = 5;
};

struct TrainResult {
  int64_t steps = 0;                 // steps completed in total (including resumed ones)
  std::vector<double> train_losses;  // LM loss of every step run by this call
  double last_val_loss = 0;          // NaN if never evaluated
  double tokens_per_second = 0;
  int64_t num_parameters = 0;
};

TrainResult run_training(const Config& config, const RunOptions& opts);

struct EvalResult {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;
};
// Loss and perplexity of the checkpoint's model on data (text files, or token file
// when token_width > 0).
EvalResult evaluate_checkpoint(const std::string& checkpoint_dir, const std::vector<std::string>& text_files,
                               const std::string& token_file, int token_width, int64_t max_batches);

struct GenerateOptions {
  std::string prompt;
  int64_t max_tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 40;  // 0: no top-k filter
  uint64_t seed = 0;
};
// The prompt followed by the sampled continuation, as bytes.
std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& opts);

}  // namespace hmoe::train
