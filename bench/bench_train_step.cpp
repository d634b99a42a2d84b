// One AdamW step of a small MLP, and one full training step of the tiny language model (forward, loss with the router's
// aux loss, backward, global-norm clipping, AdamW) for each FFN kind, in tokens/s.
// bench/train_step_torch.py runs the same model in PyTorch and prints the ratios.
#include <benchmark/benchmark.h>

#include <string>

#include "engine/profiler.h"
#include "hmoe.h"
#include "models/hypermoe/lm.h"
#include "models/hypermoe/shapes.h"
#include "models/nn/layers.h"
#include "models/optim/optimizer.h"

namespace {

using namespace hmoe;

constexpr int64_t kBatch = 16;

void BM_train_step(benchmark::State& st, const std::string& ffn, int64_t top_k) {
  model::ModelConfig cfg;  // the tiny preset: 4 layers, d 128, 4 heads, d_ff 512, block 128, 8 experts
  cfg.ffn = model::parse_ffn_kind(ffn);
  cfg.top_k = top_k;
  model::LanguageModel m(cfg, 1337);
  m.train();
  optim::AdamWOptions ao;
  ao.lr = 1e-3;
  ao.beta2 = 0.95;
  ao.weight_decay = 0.1;
  optim::AdamW opt(m.parameters(), ao);
  Generator data(7), noise(8);
  const int64_t T = cfg.block_size;
  auto batch = [&] {
    Tensor u = uniform({kBatch, T + 1}, data, 0, double(cfg.vocab_size));
    return u.to(DType::i64);
  };
  auto step = [&] {
    Tensor ids = batch();
    Tensor in = ids.narrow(1, 0, T).contiguous(), tgt = ids.narrow(1, 1, T).contiguous();
    model::LmOutput out = m.forward(in, noise);
    Tensor loss = cross_entropy(out.logits.reshape({-1, cfg.vocab_size}), tgt.reshape({-1}));
    if (out.aux_loss.defined()) loss = loss + out.aux_loss.to(loss.dtype());
    loss.backward();
    optim::clip_grad_norm_(m.parameters(), 1.0);
    opt.step();
    opt.zero_grad();
    benchmark::DoNotOptimize(loss.item());
  };
  for (auto _ : st) step();
  st.counters["tokens/s"] = benchmark::Counter(double(kBatch * T) * double(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["params"] = double(model::count_parameters(cfg));
  // One more step, profiled: its kernels' FLOPs (their cost models) are the step's work.
  Profiler prof;
  step();
  const double gflop = prof.total_work().flops * 1e-9;
  st.counters["GFLOP"] = gflop;
  st.counters["GFLOP/s"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
}

// One AdamW step of a small GELU MLP (256 -> 1024 -> 10) on a batch of 512 with
// cross-entropy: the foundation's training step, without attention or routing.
void BM_mlp_step(benchmark::State& st) {
  Generator gen(3);
  nn::MLP mlp(256, 1024, 10, gen);
  optim::AdamWOptions ao;
  optim::AdamW opt(mlp.parameters(), ao);
  Tensor x = normal({512, 256}, gen), y = uniform({512}, gen, 0, 10).to(DType::i64);
  for (auto _ : st) {
    Tensor loss = cross_entropy(mlp.forward(x), y);
    loss.backward();
    opt.step();
    opt.zero_grad();
    benchmark::DoNotOptimize(loss.item());
  }
  st.counters["samples/s"] = benchmark::Counter(512.0 * double(st.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_mlp_step)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_CAPTURE(BM_train_step, dense, std::string("dense"), 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_train_step, moe_k1, std::string("moe"), 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_train_step, hypermoe_k1, std::string("hypermoe"), 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_train_step, moe_k2, std::string("moe"), 2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_train_step, hypermoe_k2, std::string("hypermoe"), 2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
