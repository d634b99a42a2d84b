// The training run's printed lines.
#include "models/train/progress.h"

#include <cmath>
#include <cstdio>

namespace hmoe::train {

namespace {

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

}  // namespace

void Progress::restored(const std::filesystem::path& dir) const {
  if (!quiet_) std::printf("an interrupted save left the last checkpoint in %s.old: restored\n", dir.string().c_str());
}

void Progress::resumed(const std::filesystem::path& dir, int64_t step) const {
  if (!quiet_) std::printf("resumed from %s at step %lld\n", dir.string().c_str(), static_cast<long long>(step));
}

void Progress::summary(const model::ModelConfig& m, int64_t parameters, int64_t train_tokens,
                       int64_t val_tokens) const {
  if (quiet_) return;
  const std::string experts = m.ffn == model::FfnKind::dense ? std::string()
                                                             : ", " + std::to_string(m.n_experts) + " experts (top-" +
                                                                   std::to_string(m.top_k) + ")";
  std::printf("model: %s ffn, %lld layers, d=%lld%s, %lld parameters; data: %lld train / %lld val tokens\n",
              std::string(model::name(m.ffn)).c_str(), static_cast<long long>(m.n_layer),
              static_cast<long long>(m.d_model), experts.c_str(), static_cast<long long>(parameters),
              static_cast<long long>(train_tokens), static_cast<long long>(val_tokens));
}

void Progress::vocab_from_data(int64_t vocab_size, const std::string& token_file) const {
  if (!quiet_)
    std::printf(
        "model.vocab_size = %lld, from the data (the largest token id in %s, plus one); set "
        "model.vocab_size to fix it\n",
        static_cast<long long>(vocab_size), token_file.c_str());
}

void Progress::skipped(int64_t step, const std::string& what) const {
  if (quiet_) return;
  if (tty_) std::printf("\n");
  std::printf("step %5lld | %s: update skipped (train.on_nonfinite = skip)\n", static_cast<long long>(step),
              what.c_str());
}

void Progress::nothing_to_do(int64_t step, int64_t stop) const {
  if (!quiet_)
    std::printf("the checkpoint is at step %lld: nothing to train up to step %lld (raise train.steps to go on)\n",
                static_cast<long long>(step), static_cast<long long>(stop));
}

void Progress::step(const StepMetrics& s, int64_t total_steps, double eta_seconds) const {
  if (quiet_) return;
  char line[256];
  std::snprintf(line, sizeof line, "step %5lld/%lld | loss %.4f | aux %.4f | lr %.2e | %.0f tok/s | ETA %s",
                static_cast<long long>(s.step), static_cast<long long>(total_steps), s.lm_loss, s.aux_loss, s.lr,
                s.tokens_per_s, format_eta(eta_seconds).c_str());
  if (tty_)
    std::printf("\r%-100s", line);
  else
    std::printf("%s\n", line);
  std::fflush(stdout);
}

void Progress::validation(int64_t step, double loss) const {
  if (quiet_) return;
  if (tty_ && step > 0) std::printf("\n");  // below the progress line
  std::printf("step %5lld | validation loss %.4f | perplexity %.2f\n", static_cast<long long>(step), loss,
              std::exp(loss));
}

void Progress::profile(const Profiler& p, const std::string& trace_path, int64_t steps) const {
  if (quiet_) return;
  std::printf("profile of %lld step(s) (trace: %s):\n%s", static_cast<long long>(steps), trace_path.c_str(),
              p.summary().c_str());
}

}  // namespace hmoe::train
