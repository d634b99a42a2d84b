// `hmoe bench kernels` entries for the token-dispatch and router kernels (bench_dispatch.h):
// each entry calls one cuda kernel stub on inputs made once, so the access counters see
// exactly that op's kernels and the timing excludes the ops' checks and allocations.
#include "tools/hmoe/bench_dispatch.h"

#include <algorithm>
#include <memory>

#include "hmoe.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::tools {
namespace {

Tensor device_uniform(const Shape& sh, uint64_t seed) {
  Generator g(seed);
  return uniform(sh, g, -1, 1, {DType::f32, Device::cuda(0)});
}
Tensor device_empty(const Shape& sh, DType dt) { return Tensor::empty(sh, {dt, Device::cuda(0)}); }

// A plan's outputs, allocated once for `rows` routed rows over G groups (no padding).
struct PlanBuffers {
  Tensor counts, offsets, perm, inverse;
  PlanBuffers(int64_t rows, int64_t G)
      : counts(device_empty({G}, DType::i64)),
        offsets(device_empty({G + 1}, DType::i64)),
        perm(device_empty({rows}, DType::i64)),
        inverse(device_empty({rows}, DType::i64)) {}
};

// The plan of `tokens` top-k routings over N experts (ids from random logits), as a bench.
DispatchBench plan_bench(const std::string& name, int64_t tokens, int64_t N, int64_t k, uint64_t seed) {
  NoGradGuard ng;
  const Tensor ids = moe::route_topk(device_uniform({tokens, N}, seed), k).expert_ids.reshape({tokens * k});
  const int64_t n = tokens * k;
  auto buf = std::make_shared<PlanBuffers>(n, N);
  return {name, double(n) * (4 + 8 + 8) + double(N) * 16, 0, [ids, N, buf](int) {
            moe::plan_stub.get(Device::cuda(0))(ids, N, 1, buf->counts, buf->offsets, buf->perm, buf->inverse);
          }};
}

void add_router_benches(std::vector<DispatchBench>& out, int64_t T, int64_t N, int64_t k, size_t l2) {
  const double logit_bytes = double(T * N) * 4;
  const int sets = std::clamp(int(2.0 * double(l2) / logit_bytes) + 1, 1, 16);
  auto logits = std::make_shared<std::vector<Tensor>>();
  for (int i = 0; i < sets; ++i) logits->push_back(device_uniform({T, N}, 100 + uint64_t(i)));
  const Tensor probs = device_empty({T, N}, DType::f32), ids = device_empty({T, k}, DType::i32),
               gates = device_empty({T, k}, DType::f32);
  // Read logits, write probs, ids and gates.
  out.push_back({"moe/route_topk/f32", 2 * logit_bytes + double(T * k) * 8, 0, [=](int i) {
                   moe::router_topk_stub.get(Device::cuda(0))((*logits)[size_t(i) % logits->size()], k, true, probs,
                                                              ids, gates);
                 }});
  moe::router_topk_stub.get(Device::cuda(0))((*logits)[0], k, true, probs, ids, gates);
  const Tensor dgates = device_uniform({T, k}, 200), dprobs = device_uniform({T, N}, 201),
               dlogits = device_empty({T, N}, DType::f32);
  // Read probs and dprobs, ids, gates and dgates; write dlogits.
  out.push_back({"moe/route_topk_backward/f32", 3 * logit_bytes + double(T * k) * 12, 0, [=](int) {
                   moe::router_backward_stub.get(Device::cuda(0))(probs, ids, gates, true, dgates, dprobs, dlogits);
                 }});
}

// Permute, combine and their backwards over the plan of one top-k routing of T tokens.
void add_row_benches(std::vector<DispatchBench>& out, int64_t T, int64_t d, int64_t N, int64_t k) {
  NoGradGuard ng;
  const moe::RouterOutput r = moe::route_topk(device_uniform({T, N}, 300), k);
  const moe::Plan plan = moe::make_plan(r.expert_ids, N);
  const int64_t n = T * k;
  const Tensor gates = r.gates.contiguous(), x = device_uniform({T, d}, 301), ys = device_uniform({n, d}, 302),
               dy = device_uniform({T, d}, 303);
  const Tensor xs = device_empty({n, d}, DType::f32), y = device_empty({T, d}, DType::f32),
               dg = device_empty({T, k}, DType::f32);
  const double row = double(d) * 4, small = double(T), big = double(n);
  // x read once, the permuted rows written, perm read.
  out.push_back({"moe/permute/f32", (small + big) * row + big * 8, 0,
                 [=](int) { moe::permute_rows_stub.get(Device::cuda(0))(x, plan.perm, k, Tensor(), xs); }});
  // ys read, y written, inverse and gates read.
  out.push_back({"moe/combine/f32", (small + big) * row + big * 12, 2 * big * double(d),
                 [=](int) { moe::combine_stub.get(Device::cuda(0))(ys, plan.inverse, k, gates, y); }});
  // Backward of combine: dys = gate * dy[t] (the permute with slot scales), dgates = dot(dy[t], ys row).
  out.push_back({"moe/combine_backward_dys/f32", (small + big) * row + big * 12, big * double(d),
                 [=](int) { moe::permute_rows_stub.get(Device::cuda(0))(dy, plan.perm, k, gates, xs); }});
  out.push_back({"moe/combine_gate_grad/f32", (small + big) * row + big * 12, 2 * big * double(d),
                 [=](int) { moe::combine_gate_grad_stub.get(Device::cuda(0))(dy, ys, plan.inverse, k, dg); }});
  // The HyperMoE adapter's data movement (its GEMMs are the grouped GEMM benches): the
  // selection patterns, their plan (k = 1), and the adapter output back in token order.
  auto bits = std::make_shared<Tensor>(device_empty({T}, DType::i64));
  out.push_back({"moe/adapter_pattern_plan", double(n) * 4 + double(T) * (8 + 4 + 8 + 8), 0, [=](int) {
                   moe::pattern_ids_stub.get(Device::cuda(0))(r.expert_ids, N, *bits);
                   moe::Patterns p;
                   moe::unique_patterns_stub.get(Device::cuda(0))(*bits, p.patterns, p.token_pattern);
                   const int64_t P = std::max<int64_t>(1, p.patterns.numel());
                   PlanBuffers b(T, P);
                   moe::plan_stub.get(Device::cuda(0))(p.token_pattern, P, 1, b.counts, b.offsets, b.perm, b.inverse);
                 }});
  const moe::Plan pplan = moe::pattern_plan(moe::selection_patterns(r.expert_ids, N));
  const Tensor adapter_out = device_uniform({T, d}, 304);
  out.push_back({"moe/adapter_unpermute/f32", 2 * small * row + small * 8, 0,
                 [=](int) { moe::combine_stub.get(Device::cuda(0))(adapter_out, pplan.inverse, 1, Tensor(), y); }});
}

}  // namespace

std::vector<DispatchBench> dispatch_benches(bool emu, size_t l2) {
  const int64_t T = emu ? 2048 : 16384, d = emu ? 768 : 2048, N = 8, k = 2;
  std::vector<DispatchBench> out;
  add_router_benches(out, T, N, k, l2);
  // One block (decode and small batches) and the tiled path (a training batch).
  out.push_back(plan_bench("moe/plan/i32 fused", emu ? 2048 : 1024, N, k, 400));
  out.push_back(plan_bench("moe/plan/i32 tiled", emu ? 32768 : T, N, k, 401));
  // More groups than the counting sort's shared counters hold: the sort path (u64 packs).
  out.push_back(plan_bench("moe/plan/i32 sorted", emu ? 1024 : T, 4096, k, 402));
  add_row_benches(out, T, d, N, k);
  return out;
}

}  // namespace hmoe::tools
