// Sampling: temperature and top-k over the last position's logits, one Philox draw per
// token from the seed, the context cut to the model's block size.
#include "models/train/generate.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "autograd/grad_mode.h"
#include "models/train/checkpoint.h"
#include "ops/factory.h"

namespace hmoe::train {

namespace {

// The next token from the last position's logits: the likeliest at temperature 0, else a
// draw among the top_k (all when 0) with probabilities softmax(logits / temperature).
int64_t sample_token(const std::vector<double>& l, const GenerateOptions& o, Generator& gen) {
  if (o.temperature == 0) return int64_t(std::max_element(l.begin(), l.end()) - l.begin());
  std::vector<size_t> order(l.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return l[a] > l[b]; });
  const size_t keep = o.top_k > 0 ? std::min<size_t>(size_t(o.top_k), order.size()) : order.size();
  double mx = l[order[0]], z = 0;
  std::vector<double> p(keep);
  for (size_t j = 0; j < keep; ++j) z += p[j] = std::exp((l[order[j]] - mx) / o.temperature);
  const double u = philox_uniform_f64(o.seed, gen.advance(1), 0) * z;
  double acc = 0;
  for (size_t j = 0; j < keep; ++j) {
    acc += p[j];
    if (u <= acc) return int64_t(order[j]);
  }
  return int64_t(order[keep - 1]);
}

}  // namespace

void generate(const std::string& checkpoint_dir, const GenerateOptions& o,
              const std::function<void(std::string_view)>& out) {
  HMOE_CHECK(std::isfinite(o.temperature) && o.temperature >= 0, "generate: temperature must be a finite number >= 0, ",
             "got ", o.temperature);
  HMOE_CHECK(o.max_tokens >= 0 && o.top_k >= 0, "generate: max_tokens and top_k must be >= 0");
  const CheckpointModel cm = load_checkpoint_model(checkpoint_dir, /*batch=*/1, "generate");
  const Config& cfg = cm.config;
  HMOE_CHECK(cfg.model.vocab_size == 256,
             "generate: text prompts need a byte-level model (vocab 256); this model "
             "has ",
             cfg.model.vocab_size, " tokens");
  model::LanguageModel& m = *cm.model;
  m.eval();
  NoGradGuard ng;
  // The context the model sees: the last block_size tokens, no more kept.
  std::deque<int64_t> ctx;
  for (unsigned char ch : o.prompt) ctx.push_back(ch);
  if (ctx.empty()) ctx.push_back('\n');
  out(o.prompt);
  Generator gen(o.seed), unused(0);
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    while (int64_t(ctx.size()) > cfg.model.block_size) ctx.pop_front();
    const std::vector<int64_t> window(ctx.begin(), ctx.end());
    Tensor ids = from_vector(window, {1, int64_t(window.size())}).to(m.device());
    Tensor logits = m.forward(ids, unused).logits.select(0, 0).select(0, -1).to(DType::f64);  // [V]
    const int64_t next = sample_token(logits.to_vector(), o, gen);
    ctx.push_back(next);
    const char byte = char(next);
    out(std::string_view(&byte, 1));
  }
}

std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& o) {
  std::string text;
  generate(checkpoint_dir, o, [&](std::string_view s) { text.append(s); });
  return text;
}

}  // namespace hmoe::train
