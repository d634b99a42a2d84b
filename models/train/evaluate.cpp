// Losses of batches, validation over a dataset, and `hmoe eval` on a checkpoint.
#include "models/train/evaluate.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "models/train/checkpoint.h"
#include "ops/nn.h"

namespace hmoe::train {

BatchLoss batch_loss(model::LanguageModel& m, const data::Batch& b, Generator& noise) {
  const Device dev = m.device();
  model::LmOutput out = m.forward(b.inputs.to(dev), noise);
  const int64_t V = out.logits.size(2);
  Tensor lm = cross_entropy(out.logits.reshape({-1, V}).to(DType::f32), b.targets.to(dev).reshape({-1}));
  return {lm, out.aux_loss, std::move(out.expert_counts)};
}

double evaluate(model::LanguageModel& m, const data::TokenDataset& data, int64_t block, int64_t batch,
                int64_t max_batches, int64_t* tokens_out) {
  NoGradGuard ng;
  const bool was_training = m.is_training();
  m.eval();
  Generator unused(0);
  double total = 0;
  int64_t tokens = 0;
  for (const data::Batch& b : data::sequential_batches(data, block, batch, max_batches)) {
    const int64_t n = b.targets.numel();
    total += batch_loss(m, b, unused).lm.item() * double(n);
    tokens += n;
  }
  m.train(was_training);
  if (tokens_out) *tokens_out = tokens;
  return tokens ? total / double(tokens) : std::nan("");
}

EvalResult evaluate_checkpoint(const std::string& checkpoint_dir, const std::vector<std::string>& text_files,
                               const std::string& token_file, int token_width, int64_t max_batches) {
  HMOE_CHECK(max_batches >= 1, "eval: the number of batches must be >= 1, got ", max_batches);
  const CheckpointModel cm = load_checkpoint_model(checkpoint_dir, /*batch=*/0, "eval");
  const Config& cfg = cm.config;
  // Ids at or beyond the model's vocabulary are errors naming their offset.
  const data::TokenDataset ds = token_width > 0
                                    ? data::TokenDataset::from_token_file(token_file, token_width, cfg.model.vocab_size)
                                    : data::TokenDataset::from_text_files(text_files, cfg.model.vocab_size);
  EvalResult r;
  r.loss = evaluate(*cm.model, ds, cfg.model.block_size, cfg.train.batch_size, max_batches, &r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace hmoe::train
