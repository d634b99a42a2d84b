// Inference with the key/value cache (models/infer): cached decode against the whole
// window recomputed for every token (dense, MoE, HyperMoE), batched prompts of different
// lengths against each alone, full windows starting over, several threads sharing one
// model, the sampler's options, and bad input.
#include <gtest/gtest.h>

#include <thread>

#include "models/infer/generate.h"
#include "tests/support/infer_util.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

std::shared_ptr<const infer::Model> wide_model(const std::string& ffn) {
  return std::make_shared<const infer::Model>(wide_lm(ffn));
}

std::vector<float> row(const Tensor& logits, int64_t b) {
  return logits.select(0, b).contiguous().to_vector_as<float>();
}

infer::Request greedy(std::vector<int64_t> prompt, int64_t n) {
  infer::Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.max_tokens = n;
  return r;
}

class CachedDecode : public ::testing::TestWithParam<std::string> {};

// Prefill 3 tokens, then decode to the end of the window: every step's logits within
// 1e-5 of the full recompute's, and the greedy tokens the same.
TEST_P(CachedDecode, EqualsFullRecompute) {
  auto ref = wide_lm(GetParam());
  auto m = wide_model(GetParam());
  infer::Session s(m, 1);
  std::vector<int64_t> seq{3, 17, 5};
  Tensor logits = s.prefill({seq});
  for (int64_t step = 0; int64_t(seq.size()) < m->config().block_size; ++step) {
    const std::vector<float> got = row(logits, 0), want = full_logits(*ref, seq);
    EXPECT_LT(rel_diff(got, want), 1e-5) << "at length " << seq.size();
    ASSERT_EQ(argmax(got), argmax(want)) << "at length " << seq.size();
    seq.push_back(argmax(got));
    logits = s.decode({seq.back()});
    EXPECT_EQ(s.length(0), int64_t(seq.size()));
  }
}

// Past the window: with window_keep = block_size the cached loop starts the row over
// with the last block_size tokens for every token, which is what recomputing the sliding
// window does; the default (half the window) sees fewer tokens after each restart.
TEST_P(CachedDecode, FullWindowStartsOver) {
  auto ref = wide_lm(GetParam());
  auto m = wide_model(GetParam());
  const int64_t bs = m->config().block_size;
  infer::Request r = greedy({1, 2, 3, 4, 5}, 2 * bs);
  r.window_keep = bs;
  const std::vector<int64_t> got = infer::generate(m, {r})[0].tokens;
  std::vector<int64_t> seq = r.prompt;
  for (int64_t i = 0; i < r.max_tokens; ++i) seq.push_back(argmax(full_logits(*ref, seq)));
  EXPECT_EQ(got, std::vector<int64_t>(seq.begin() + 5, seq.end()));
  r.window_keep = 0;
  EXPECT_EQ(int64_t(infer::generate(m, {r})[0].tokens.size()), 2 * bs);
}

// Rows of lengths 2, 7 and 4 in one batch give each row's tokens alone, greedy and sampled.
TEST_P(CachedDecode, BatchedPromptsEqualEachAlone) {
  auto m = wide_model(GetParam());
  std::vector<infer::Request> rs{greedy({9, 4}, 20), greedy({1, 2, 3, 4, 5, 6, 7}, 6), greedy({30, 0, 12, 8}, 13)};
  rs[1].sampling = {1.0, 0, 0.9, 11};
  rs[2].sampling = {0.7, 5, 1.0, 12};
  const std::vector<infer::Completion> batch = infer::generate(m, rs);
  for (size_t b = 0; b < rs.size(); ++b) {
    EXPECT_EQ(batch[b].tokens, infer::generate(m, {rs[b]})[0].tokens) << "row " << b;
    EXPECT_EQ(int64_t(batch[b].tokens.size()), rs[b].max_tokens);
  }
  // The prefill and first decode step's logits, row by row.
  infer::Session all(m, 3), one(m, 1);
  const Tensor la = all.prefill({rs[0].prompt, rs[1].prompt, rs[2].prompt});
  const Tensor da = all.decode({5, -1, 6});
  EXPECT_EQ(all.length(1), 7);
  for (int64_t b : {0, 2}) {
    EXPECT_LT(rel_diff(row(la, b), row(one.prefill({rs[size_t(b)].prompt}), 0)), 1e-5);
    EXPECT_LT(rel_diff(row(da, b), row(one.decode({b == 0 ? 5 : 6}), 0)), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Ffn, CachedDecode, ::testing::Values("dense", "moe", "hypermoe"));

// One model, four threads, each generating its own batch: the results of a serial run.
// infer::Model keeps each selection's adapter (exactly what generating it again gives) and
// stores the Linear weights column-major on the CPU (the same values, the same keys).
TEST(Inference, ModelCachesAdaptersAndKeepsWeights) {
  auto ref = wide_lm("hypermoe");
  auto lm = wide_lm("hypermoe");
  model::LanguageModel* owned = lm.get();  // the infer::Model's own from here
  const infer::Model m(std::move(lm));
  const nn::StateDict a = ref->state_dict(), b = owned->state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto &[name, t] = a.items()[i];
    EXPECT_EQ(b.items()[i].first, name);
    EXPECT_TRUE(bit_equal(b.items()[i].second, t)) << name;
  }
  EXPECT_FALSE(b.at("blocks.0.attn.qkv.weight").is_contiguous());

  auto first_hyper = [](nn::Module& root) {
    model::HyperMoEFFN* found = nullptr;
    root.apply([&](nn::Module& x) {
      if (!found) found = dynamic_cast<model::HyperMoEFFN*>(&x);
    });
    return found;
  };
  model::HyperMoEFFN *layer = first_hyper(*owned), *fresh = first_hyper(*ref);
  ASSERT_TRUE(layer && fresh);
  const NoGradGuard ng;
  const int64_t d = ref->config().d_model;
  Generator gen(3);
  const Tensor x = normal({12, d}, gen);
  // Every pattern of 4 experts top-2 once, then one token of a pattern already seen.
  const Tensor ids = from_vector(std::vector<int64_t>{0, 1, 0, 2, 0, 3, 1, 2, 1, 3, 2, 3, 0, 1, 2, 3, 0, 2, 1, 3,
                                                      3, 2, 1, 0},
                                 {12, 2});
  EXPECT_EQ(layer->cached_adapters(), 0u);
  EXPECT_TRUE(bit_equal(layer->hyper_expert(x, ids), fresh->hyper_expert(x, ids)));
  EXPECT_EQ(layer->cached_adapters(), 6u);
  const Tensor one = ids.narrow(0, 5, 1);
  EXPECT_TRUE(bit_equal(layer->hyper_expert(x.narrow(0, 5, 1), one), fresh->hyper_expert(x.narrow(0, 5, 1), one)));
  EXPECT_EQ(layer->cached_adapters(), 6u);
  const autograd::GradModeGuard grad(true);
  EXPECT_HMOE_ERROR(layer->hyper_expert(x, ids), "caches its adapters for inference");
}

TEST(Inference, ThreadsShareOneModel) {
  auto m = wide_model("hypermoe");
  std::vector<std::vector<infer::Request>> jobs;
  for (int j = 0; j < 4; ++j) {
    infer::Request r = greedy({int64_t(j), 5, int64_t(2 * j)}, 30);
    r.sampling = {0.9, 8, 0.95, uint64_t(j)};
    jobs.push_back({r, greedy({7, int64_t(j + 1)}, 12)});
  }
  std::vector<std::vector<infer::Completion>> serial, threaded(jobs.size());
  for (const auto& j : jobs) serial.push_back(infer::generate(m, j));
  std::vector<std::thread> ts;
  for (size_t j = 0; j < jobs.size(); ++j) ts.emplace_back([&, j] { threaded[j] = infer::generate(m, jobs[j]); });
  for (auto& t : ts) t.join();
  for (size_t j = 0; j < jobs.size(); ++j)
    for (size_t b = 0; b < jobs[j].size(); ++b) EXPECT_EQ(threaded[j][b].tokens, serial[j][b].tokens) << j << " " << b;
}

TEST(Inference, SamplerOptions) {
  const std::vector<float> l{0.5f, 2.0f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(infer::Sampler({0, 40, 1, 0}).next(l), 1);  // greedy: ties to the lowest id
  for (uint64_t seed = 0; seed < 20; ++seed) {
    EXPECT_EQ(infer::Sampler({5.0, 1, 1, seed}).next(l), 1);     // top-1
    EXPECT_EQ(infer::Sampler({1.0, 0, 1e-6, seed}).next(l), 1);  // the nucleus is one token
    const int64_t t = infer::Sampler({100.0, 3, 1, seed}).next(l);
    EXPECT_TRUE(t == 1 || t == 2 || t == 4) << t;
  }
  // A row's draws depend on its seed only: two samplers, one stream each.
  infer::Sampler a({1.0, 0, 1, 3}), b({1.0, 0, 1, 3});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next(l), b.next(l));
}

TEST(Inference, StopSequencesAndBudget) {
  auto m = wide_model("moe");
  infer::Request r = greedy({1, 2}, 12);
  const std::vector<int64_t> all = infer::generate(m, {r})[0].tokens;
  r.stop = {{99, 98}, {all[3], all[4]}};
  size_t end = 2;  // just after the first place the output holds the stop sequence
  while (all[end - 2] != all[3] || all[end - 1] != all[4]) ++end;
  const infer::Completion c = infer::generate(m, {r})[0];
  EXPECT_EQ(c.reason, infer::StopReason::stop_sequence);
  EXPECT_EQ(c.tokens, std::vector<int64_t>(all.begin(), all.begin() + std::ptrdiff_t(end)));
  r.max_tokens = 0;
  EXPECT_TRUE(infer::generate(m, {r})[0].tokens.empty());
  r.max_tokens = 12;
  r.keep_output = false;
  std::vector<int64_t> streamed;
  const infer::Completion s = infer::generate(m, {r}, [&](int64_t, int64_t t) { streamed.push_back(t); })[0];
  EXPECT_TRUE(s.tokens.empty());
  EXPECT_EQ(s.generated, int64_t(end));
  EXPECT_EQ(streamed, c.tokens);
}

TEST(Inference, BadInput) {
  auto m = wide_model("dense");
  const int64_t bs = m->config().block_size;
  infer::Session s(m, 2);
  EXPECT_HMOE_ERROR(s.prefill({{1}, {}}), "prompt 1 has 0 tokens");
  EXPECT_HMOE_ERROR(s.prefill({{1}, std::vector<int64_t>(size_t(bs + 1), 1)}),
                    "has 17 tokens; a prompt needs 1 .. block_size = 16");
  EXPECT_HMOE_ERROR(s.prefill({{1}}), "1 prompts for a batch of 2");
  EXPECT_HMOE_ERROR(s.prefill({{1}, {32}}), "token 32 is outside the vocabulary [0, 32)");
  EXPECT_HMOE_ERROR(s.decode({1, 2}), "row 0 has no tokens yet");
  s.prefill({{1}, std::vector<int64_t>(size_t(bs), 1)});
  EXPECT_HMOE_ERROR(s.decode({1, 2}), "row 1 holds block_size = 16 tokens");
  EXPECT_HMOE_ERROR(s.decode({-2, -1}), "token -2 is outside");
  EXPECT_HMOE_ERROR(s.prefill_row(2, {1}), "row 2 of a batch of 2");
  EXPECT_HMOE_ERROR(infer::Session(m, 0), "batch must be >= 1");
  const auto gen = [&](auto edit) {
    infer::Request r = greedy({1}, 3);
    edit(r);
    return infer::generate(m, {r});
  };
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.sampling.temperature = -1; }), "temperature must be a finite");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.sampling.top_k = -1; }), "top_k must be >= 0");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.sampling.top_p = 0; }), "top_p must be in (0, 1]");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.max_tokens = -1; }), "max_tokens must be >= 0");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.window_keep = 17; }), "window_keep must be in [0, block_size = 16]");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.stop = {{}}; }), "a stop sequence is empty");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.prompt.clear(); }), "the prompt has 0 tokens");
  EXPECT_HMOE_ERROR(gen([](infer::Request& r) { r.prompt.assign(17, 1); }),
                    "the prompt has 17 tokens; a prompt needs 1 .. block_size = 16");
  EXPECT_HMOE_ERROR(infer::generate(m, {}), "no requests");
}

}  // namespace
}  // namespace hmoe
