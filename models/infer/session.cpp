// Prefill (rows right-padded, so the fused causal kernel serves every row; each row's
// logits read at its own last token) and decode (row b's token at slot and position
// length[b], attending to its cached slots).
#include "models/infer/session.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "models/nn/layers.h"
#include "models/train/checkpoint.h"
#include "ops/factory.h"

namespace hmoe::infer {

std::shared_ptr<const Model> Model::load(const std::filesystem::path& checkpoint_dir, const std::string& what) {
  train::CheckpointModel cm = train::load_checkpoint_model(checkpoint_dir, /*batch=*/1, what);
  return std::make_shared<const Model>(std::move(cm.model));
}

Model::Model(std::unique_ptr<model::LanguageModel> lm) : lm_(std::move(lm)) {
  HMOE_CHECK(lm_ != nullptr, "infer::Model: no model given");
  lm_->eval();
  device_ = lm_->device();
  // Each HyperMoE layer caches the adapter of every selection pattern it meets: the
  // hypernetwork's heads are most of a decode step's arithmetic otherwise.
  // A decode step multiplies one row by each weight: with W [out, in] stored row-major the
  // CPU GEMM transposes a micro-panel of W for every call (measured as half of a small
  // decode step) before an in-place product could start. Stored column-major (the same
  // values; W^T contiguous) the one-row product reads W^T in place. The model is ours and
  // immutable from here, so this is a one-time copy, not a second set of weights.
  const bool cpu = device_.is_cpu();
  lm_->apply([cpu](nn::Module& m) {
    if (auto* l = dynamic_cast<nn::Linear*>(&m); l && cpu) l->weight.set_data(l->weight.detach().t().contiguous().t());
    if (auto* h = dynamic_cast<model::HyperMoEFFN*>(&m)) h->cache_adapters();
  });
}

Tensor Model::forward_cached(const Tensor& ids, const Tensor& pos, const std::vector<int64_t>& start,
                             model::KvCache& cache, const std::vector<int64_t>& at) const {
  const NoGradGuard ng;
  return lm_->forward_cached(ids.to(device_), pos.to(device_), start, cache, at).to(DType::f32).to(Device::cpu());
}

Session::Session(std::shared_ptr<const Model> model, int64_t batch) : model_(std::move(model)) {
  HMOE_CHECK(model_ != nullptr, "infer::Session: no model given");
  HMOE_CHECK(batch >= 1, "infer::Session: batch must be >= 1, got ", batch);
  cache_ = model_->make_cache(batch, model_->config().block_size + 1);
  length_.assign(size_t(batch), 0);
}

void Session::check_tokens(const std::vector<int64_t>& tokens, const char* what) const {
  const int64_t V = model_->config().vocab_size;
  for (int64_t t : tokens)
    HMOE_CHECK(t >= 0 && t < V, "infer::Session::", what, ": token ", t, " is outside the vocabulary [0, ", V, ")");
}

Tensor Session::prefill(const std::vector<std::vector<int64_t>>& prompts) {
  const int64_t B = batch(), bs = model_->config().block_size;
  HMOE_CHECK(int64_t(prompts.size()) == B, "infer::Session::prefill: ", prompts.size(), " prompts for a batch of ", B);
  int64_t T = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    const int64_t n = int64_t(prompts[b].size());
    HMOE_CHECK(n >= 1 && n <= bs, "infer::Session::prefill: prompt ", b, " has ", n,
               " tokens; a prompt needs 1 .. block_size = ", bs);
    check_tokens(prompts[b], "prefill");
    T = std::max(T, n);
  }
  // Right-padded with token 0: a real token's causal window never reaches a pad, and the
  // pads' cache slots lie past the row's length (later overwritten or masked).
  std::vector<int64_t> ids(static_cast<size_t>(B * T), 0), pos(static_cast<size_t>(B * T)), at(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    std::copy(prompts[size_t(b)].begin(), prompts[size_t(b)].end(), ids.begin() + b * T);
    for (int64_t t = 0; t < T; ++t) pos[size_t(b * T + t)] = t;
    at[size_t(b)] = int64_t(prompts[size_t(b)].size()) - 1;
  }
  const Tensor logits = model_->forward_cached(from_vector(ids, {B, T}), from_vector(pos, {B, T}),
                                               std::vector<int64_t>(size_t(B), 0), cache_, at);
  for (int64_t b = 0; b < B; ++b) length_[size_t(b)] = int64_t(prompts[size_t(b)].size());
  return logits;
}

Tensor Session::prefill_row(int64_t row, const std::vector<int64_t>& tokens) {
  HMOE_CHECK(row >= 0 && row < batch(), "infer::Session::prefill_row: row ", row, " of a batch of ", batch());
  const int64_t n = int64_t(tokens.size()), bs = model_->config().block_size;
  HMOE_CHECK(n >= 1 && n <= bs, "infer::Session::prefill_row: ", n, " tokens; a row holds 1 .. block_size = ", bs);
  check_tokens(tokens, "prefill_row");
  model::KvCache one = cache_.rows(row, 1);
  const Tensor logits =
      model_->forward_cached(from_vector(tokens, {1, n}), arange(n).reshape({1, n}), {0}, one, {n - 1});
  length_[size_t(row)] = n;
  return logits.select(0, 0);
}

Tensor Session::decode(const std::vector<int64_t>& tokens) {
  const int64_t B = batch(), bs = model_->config().block_size;
  HMOE_CHECK(int64_t(tokens.size()) == B, "infer::Session::decode: ", tokens.size(), " tokens for a batch of ", B);
  std::vector<int64_t> ids(static_cast<size_t>(B)), pos(static_cast<size_t>(B)), start(length_);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t t = tokens[size_t(b)], len = length_[size_t(b)];
    if (t == -1) continue;  // id and position 0; its key goes to slot len, past its tokens
    check_tokens({t}, "decode");
    HMOE_CHECK(len >= 1, "infer::Session::decode: row ", b, " has no tokens yet: prefill it first");
    HMOE_CHECK(len < bs, "infer::Session::decode: row ", b, " holds block_size = ", bs,
               " tokens; start it over with the ones to keep (prefill_row)");
    ids[size_t(b)] = t;
    pos[size_t(b)] = len;
  }
  const Tensor logits = model_->forward_cached(from_vector(ids, {B, 1}), from_vector(pos, {B, 1}), start, cache_,
                                               std::vector<int64_t>(size_t(B), 0));
  for (int64_t b = 0; b < B; ++b) length_[size_t(b)] += tokens[size_t(b)] != -1;
  return logits;
}

}  // namespace hmoe::infer
