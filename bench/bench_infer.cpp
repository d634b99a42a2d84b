// Inference speed at batch 1 for the tiny and small presets (block_size 1024 so both
// contexts fit): prefill tokens/s (a prompt through infer::Session), decode tokens/s with
// the key/value cache (32 steps after a prompt of context - 32), and decode without a
// cache (the whole window through LanguageModel::forward per token, as `hmoe generate`
// did before the cache). bench/infer_torch.py runs the same model in PyTorch beside it.
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "hmoe.h"
#include "models/hypermoe/lm.h"
#include "models/infer/session.h"

namespace {

using namespace hmoe;

constexpr int64_t kDecodeSteps = 32;

// The preset's sizes (`hmoe presets`), block_size 1024. The routers get torch.nn.Linear's
// init (uniform, std 1/sqrt(3 d)) so tokens spread over the experts as they do in the
// PyTorch model; the models' own zero init sends every token to expert 0.
std::unique_ptr<model::LanguageModel> build(const std::string& preset, const std::string& ffn) {
  model::ModelConfig c;
  c.ffn = model::parse_ffn_kind(ffn);
  if (preset == "small") {
    c.n_layer = 6, c.d_model = 256, c.n_head = 8, c.d_ff = 1024, c.adapter_rank = 32;
  }
  c.block_size = 1024;
  auto m = std::make_unique<model::LanguageModel>(c, 1337);
  Generator gen(5);
  const NoGradGuard ng;
  for (auto& [name, p] : m->named_parameters())
    if (name.find("router.weight") != std::string::npos)
      p.copy_(normal(p.shape(), gen, 0.0, 1.0 / std::sqrt(3.0 * double(c.d_model))));
  m->eval();
  return m;
}

std::vector<int64_t> prompt(int64_t n) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = (i * 37 + 11) % 256;
  return p;
}

void BM_infer(benchmark::State& st, const std::string& preset, const std::string& ffn, const std::string& mode,
              int64_t context) {
  std::unique_ptr<model::LanguageModel> lm = build(preset, ffn);
  if (mode == "nocache") {
    const NoGradGuard ng;
    const Tensor ids = from_vector(prompt(context), {1, context});
    Generator unused(0);
    for (auto _ : st) benchmark::DoNotOptimize(lm->forward(ids, unused).logits.select(1, -1).to_vector());
    st.counters["tokens/s"] = benchmark::Counter(double(st.iterations()), benchmark::Counter::kIsRate);
    return;
  }
  auto m = std::make_shared<const infer::Model>(std::move(lm));
  infer::Session s(m, 1);
  if (mode == "prefill") {
    const std::vector<int64_t> p = prompt(context);
    for (auto _ : st) benchmark::DoNotOptimize(s.prefill({p}));
    st.counters["tokens/s"] = benchmark::Counter(double(context * st.iterations()), benchmark::Counter::kIsRate);
    return;
  }
  const std::vector<int64_t> p = prompt(context - kDecodeSteps);
  for (auto _ : st) {
    st.PauseTiming();
    s.prefill({p});
    st.ResumeTiming();
    for (int64_t i = 0; i < kDecodeSteps; ++i) benchmark::DoNotOptimize(s.decode({i % 256}));
  }
  st.counters["tokens/s"] = benchmark::Counter(double(kDecodeSteps * st.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* preset : {"tiny", "small"})
    for (const char* ffn : {"dense", "moe", "hypermoe"})
      for (const char* mode : {"prefill", "decode", "nocache"})
        for (int64_t ctx : {128, 1024}) {
          const std::string name =
              std::string("BM_infer/") + preset + "/" + ffn + "/" + mode + "/" + std::to_string(ctx);
          benchmark::RegisterBenchmark(name.c_str(), BM_infer, preset, ffn, mode, ctx)
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
