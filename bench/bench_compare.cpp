// Times a fixed list of ops at fixed shapes (median of repeated runs, after warm-up)
// and prints one JSON line per op; bench/compare_torch.py runs the same list in
// PyTorch and prints the ratios side by side.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "hmoe.h"

using namespace hmoe;

namespace {

double median_ms(const std::function<void()>& fn, int reps) {
  fn();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Tensor rn(const Shape& s, uint64_t seed, bool grad = false) {
  Generator g(seed);
  Tensor t = normal(s, g);
  if (grad) t.set_requires_grad(true);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  struct Case {
    std::string name;
    std::function<void()> fn;
    int reps;
  };
  const Tensor a = rn({4096, 1024}, 1), b = rn({4096, 1024}, 2), row = rn({1024}, 3);
  const Tensor m1 = rn({1024, 1024}, 4), m2 = rn({1024, 1024}, 5);
  const Tensor x = rn({4096, 512}, 6, true), w = rn({2048, 512}, 7, true), bias = rn({2048}, 8, true);
  const Tensor lnw = rn({1024}, 9, true), lnb = rn({1024}, 10, true), ag = rn({4096, 1024}, 11, true);
  const Tensor logits = rn({2048, 4096}, 12, true);
  const Tensor targets = arange(2048);  // < 4096 classes
  const Tensor emb = rn({32000, 256}, 13, true);
  Generator ig(14);
  const Tensor ids = uniform({8192}, ig, 0, 31999.0, {DType::f64}).to(DType::i64);
  const Tensor q = rn({4, 8, 256, 64}, 15, true), k = rn({4, 8, 256, 64}, 16, true), v = rn({4, 8, 256, 64}, 17, true);
  std::vector<Case> cases = {
      {"add_broadcast", [&] { add(a, row); }, 20},
      {"mul", [&] { mul(a, b); }, 20},
      {"gelu", [&] { gelu(a); }, 20},
      {"exp", [&] { exp(a); }, 20},
      {"sum_rows", [&] { sum(a, {1}); }, 20},
      {"sum_cols", [&] { sum(a, {0}); }, 20},
      {"softmax", [&] { softmax(a, -1); }, 20},
      {"log_softmax", [&] { log_softmax(a, -1); }, 20},
      {"layer_norm_fwd_bwd", [&] { sum(layer_norm(ag, lnw, lnb)).backward(); }, 10},
      {"rms_norm_fwd_bwd", [&] { sum(rms_norm(ag, lnw)).backward(); }, 10},
      {"cross_entropy_fwd_bwd", [&] { cross_entropy(logits, targets).backward(); }, 10},
      {"matmul_1024", [&] { matmul(m1, m2); }, 10},
      {"linear_fwd_bwd", [&] { sum(linear(x, w, bias)).backward(); }, 5},
      {"embedding_fwd_bwd", [&] { sum(embedding(emb, ids)).backward(); }, 10},
      {"attention_fwd_bwd", [&] { sum(causal_attention(q, k, v)).backward(); }, 5},
      {"topk_8", [&] { topk(a, 8, -1); }, 10},
      {"cat", [&] { cat({a, b}, 1); }, 20},
  };
  for (const Case& c : cases) {
    if (!only.empty() && c.name != only) continue;
    for (Tensor t : {x, w, bias, lnw, lnb, ag, logits, emb, q, k, v}) t.zero_grad();
    const double ms = median_ms(c.fn, c.reps);
    std::printf("{\"op\": \"%s\", \"ms\": %.4f}\n", c.name.c_str(), ms);
    std::fflush(stdout);
  }
  return 0;
}
