/// @file
/// Evaluation: a batch's losses (shared with training), the mean validation loss of a
/// model on a dataset, and the loss and perplexity of a saved checkpoint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "models/data/dataset.h"
#include "models/hypermoe/lm.h"

namespace hmoe::train {

/// What one batch's forward pass gives.
struct BatchLoss {
  /// @{
  /// The LM loss (cross-entropy in f32 whatever the model's precision, 0-d) and the
  /// routers' weighted aux loss (0-d f32).
  Tensor lm, aux;
  /// @}
  std::vector<std::vector<int64_t>> expert_counts;  ///< per MoE layer: tokens routed to each expert
};
/// One batch's forward pass (training mode as the model is; noise draws router noise and
/// dropout).
BatchLoss batch_loss(model::LanguageModel& m, const data::Batch& b, Generator& noise);

/// The mean LM loss per token over the first `max_batches` sequential batches of `data`,
/// in eval mode without gradients (it draws nothing: a run continues the same after it).
/// NaN when there is no batch. `tokens_out`, if given, receives the tokens counted.
double evaluate(model::LanguageModel& m, const data::TokenDataset& data, int64_t block, int64_t batch,
                int64_t max_batches, int64_t* tokens_out = nullptr);

/// A checkpoint's evaluation.
struct EvalResult {
  /// @{
  /// The mean LM loss per token and its exponential.
  double loss = 0, perplexity = 0;
  /// @}
  int64_t tokens = 0;  ///< tokens evaluated
};
/// Loss and perplexity of the checkpoint's model on data (text files, or token file
/// when token_width > 0).
EvalResult evaluate_checkpoint(const std::string& checkpoint_dir, const std::vector<std::string>& text_files,
                               const std::string& token_file, int token_width, int64_t max_batches);

}  // namespace hmoe::train
