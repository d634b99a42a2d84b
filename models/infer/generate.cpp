// The generation loop: sample every live row from its logits, then one decode step for
// the rows that go on (a full row starts over with the tokens it keeps instead).
#include "models/infer/generate.h"

#include <algorithm>

#include "engine/error.h"

namespace hmoe::infer {

namespace {

// Whether the row's tokens (its last ones, of which the last n were generated) end with a stop sequence.
bool ends_with_stop(const std::vector<int64_t>& tail, int64_t n, const std::vector<std::vector<int64_t>>& stop) {
  return std::any_of(stop.begin(), stop.end(), [&](const std::vector<int64_t>& s) {
    return int64_t(s.size()) <= n && std::equal(s.rbegin(), s.rend(), tail.rbegin());
  });
}

}  // namespace

void validate(const Request& r, int64_t block_size) {
  HMOE_CHECK(!r.prompt.empty() && int64_t(r.prompt.size()) <= block_size, "generate: the prompt has ", r.prompt.size(),
             " tokens; a prompt needs 1 .. block_size = ", block_size);
  validate(r.sampling);
  HMOE_CHECK(r.max_tokens >= 0, "generate: max_tokens must be >= 0, got ", r.max_tokens);
  HMOE_CHECK(r.window_keep >= 0 && r.window_keep <= block_size,
             "generate: window_keep must be in [0, block_size = ", block_size, "] (0: half the block), got ",
             r.window_keep);
  for (const auto& s : r.stop) HMOE_CHECK(!s.empty(), "generate: a stop sequence is empty");
}

std::vector<Completion> generate(const std::shared_ptr<const Model>& model, const std::vector<Request>& requests,
                                 const std::function<void(int64_t, int64_t)>& on_token) {
  HMOE_CHECK(model != nullptr, "generate: no model given");
  HMOE_CHECK(!requests.empty(), "generate: no requests");
  const int64_t B = int64_t(requests.size()), bs = model->config().block_size, V = model->config().vocab_size;
  std::vector<Sampler> samplers;
  std::vector<std::vector<int64_t>> prompts;
  size_t tail_size = size_t(bs);  // what a row keeps of its tokens: a window, and the longest stop
  for (const Request& r : requests) {
    validate(r, bs);
    samplers.emplace_back(r.sampling);
    prompts.push_back(r.prompt);
    for (const auto& st : r.stop) tail_size = std::max(tail_size, st.size());
  }
  Session s(model, B);
  Tensor logits = s.prefill(prompts).contiguous();
  std::vector<std::vector<int64_t>> tail = std::move(prompts);
  std::vector<Completion> out(static_cast<size_t>(B));
  std::vector<bool> live(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) live[size_t(b)] = requests[size_t(b)].max_tokens > 0;
  while (std::find(live.begin(), live.end(), true) != live.end()) {
    std::vector<int64_t> step(size_t(B), -1);
    std::vector<std::pair<int64_t, Tensor>> restarted;  // rows that started over, their logits
    for (int64_t b = 0; b < B; ++b) {
      if (!live[size_t(b)]) continue;
      const Request& r = requests[size_t(b)];
      Completion& c = out[size_t(b)];
      std::vector<int64_t>& t = tail[size_t(b)];
      const int64_t next = samplers[size_t(b)].next({logits.data_ptr<float>() + b * V, size_t(V)});
      if (r.keep_output) c.tokens.push_back(next);
      ++c.generated;
      t.push_back(next);
      if (t.size() >= 2 * tail_size) t.erase(t.begin(), t.end() - std::ptrdiff_t(tail_size));
      if (on_token) on_token(b, next);
      if (ends_with_stop(t, c.generated, r.stop)) c.reason = StopReason::stop_sequence;
      live[size_t(b)] = c.reason != StopReason::stop_sequence && c.generated < r.max_tokens;
      if (!live[size_t(b)]) continue;
      if (s.length(b) < bs) {
        step[size_t(b)] = next;
        continue;
      }
      const int64_t keep = r.window_keep > 0 ? r.window_keep : std::max<int64_t>(1, bs / 2);
      restarted.emplace_back(b, s.prefill_row(b, std::vector<int64_t>(t.end() - keep, t.end())));
    }
    if (std::any_of(step.begin(), step.end(), [](int64_t x) { return x != -1; })) logits = s.decode(step).contiguous();
    for (const auto& [b, row] : restarted) logits.select(0, b).copy_(row);
  }
  return out;
}

}  // namespace hmoe::infer
