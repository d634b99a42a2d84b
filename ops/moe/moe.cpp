// The MoE ops: router and aux losses, plan / permute / combine, selection patterns,
// grouped GEMM and the hyper adapter. Built on the differentiable core ops, so every
// gradient (including the gate gradient dot(dy_t, ys_row)) follows from theirs; the
// plan is a deterministic counting sort.
#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"
#include "ops/nn.h"
#include "ops/reduce.h"
#include "ops/sort.h"

namespace hmoe::moe {

RouterOutput route(const Tensor& logits_in, const RouterConfig& cfg) {
  HMOE_CHECK(logits_in.dim() == 2 && is_floating(logits_in.dtype()), "route: logits must be a float [T, N] tensor, got ",
             logits_in.meta_str());
  const int64_t T = logits_in.size(0), N = logits_in.size(1);
  HMOE_CHECK(cfg.k >= 1 && cfg.k <= N, "route: k = ", cfg.k, " must be in [1, N = ", N, "]");
  HMOE_CHECK(cfg.capacity_factor >= 0, "route: capacity_factor must be >= 0");
  const Tensor logits = logits_in.dtype() == DType::f64 ? logits_in : logits_in.to(DType::f32);
  RouterOutput r;
  r.num_experts = N;
  r.probs = softmax(logits, 1);
  auto [top, idx] = topk(r.probs, cfg.k, 1);
  r.expert_ids = idx.to(DType::i32);
  r.gates = cfg.renormalize ? top / sum(top, {1}, true) : top;
  if (cfg.capacity_factor > 0) {
    // Position priority: a token beyond its expert's capacity (top-1 choice) is dropped.
    const int64_t cap = int64_t(std::ceil(cfg.capacity_factor * double(T) / double(N)));
    const auto first = idx.select(1, 0).contiguous().to_vector_as<int64_t>();
    std::vector<int64_t> seen(size_t(N), 0);
    std::vector<int32_t> drop(size_t(T), 0);
    for (int64_t t = 0; t < T; ++t) drop[size_t(t)] = ++seen[size_t(first[size_t(t)])] > cap;
    r.dropped = from_vector(drop, {T}).to(DType::b8);
  }
  return r;
}

namespace {
Tensor routed_counts(const RouterOutput& r) {
  return bincount(r.expert_ids.reshape({-1}).to(DType::i64), r.num_experts).to(r.probs.dtype());
}
Tensor cv_squared(const Tensor& v) {
  // var / mean^2 (population variance); 0 for a single expert.
  if (v.numel() <= 1) return zeros({}, {v.dtype()});
  const Tensor m = mean(v);
  return var(v, {0}, false, 0) / (square(m) + 1e-10);
}
}  // namespace

Tensor load_balancing_loss(const RouterOutput& r) {
  const Tensor f = routed_counts(r) / double(std::max<int64_t>(1, r.expert_ids.numel()));
  const Tensor P = mean(r.probs, {0});
  return sum(f * P) * double(r.num_experts);
}

Tensor cv_squared_loss(const RouterOutput& r, const Tensor& /*noise_std*/) {
  const int64_t T = r.probs.size(0);
  const Tensor gates_full = scatter_add(zeros({T, r.num_experts}, {r.gates.dtype()}), 1,
                                        r.expert_ids.to(DType::i64), r.gates);
  return cv_squared(sum(gates_full, {0})) + cv_squared(routed_counts(r));
}

Tensor router_z_loss(const Tensor& logits) {
  const Tensor l = logits.dtype() == DType::f64 ? logits : logits.to(DType::f32);
  return mean(square(logsumexp(l, {1})));
}

Plan make_plan(const Tensor& ids_in, int64_t groups) {
  HMOE_CHECK(ids_in.dtype() == DType::i32 || ids_in.dtype() == DType::i64, "make_plan: ids must be integers, got ",
             ids_in.meta_str());
  HMOE_CHECK(ids_in.dim() == 1 || ids_in.dim() == 2, "make_plan: ids must be [T] or [T, k], got ", ids_in.meta_str());
  HMOE_CHECK(groups >= 1, "make_plan: need at least one group");
  const Tensor ids = ids_in.dim() == 1 ? ids_in.unsqueeze(1) : ids_in;
  const int64_t k = ids.size(1), n = ids.numel();
  HMOE_CHECK(k <= groups || ids_in.dim() == 1, "make_plan: k = ", k, " exceeds the ", groups, " groups");
  const std::vector<int64_t> v = ids.to(DType::i64).contiguous().to_vector_as<int64_t>();
  std::vector<int64_t> counts(size_t(groups), 0), offsets(size_t(groups) + 1, 0), perm(static_cast<size_t>(n)), inv(static_cast<size_t>(n));
  for (int64_t x : v) {
    HMOE_CHECK(x >= 0 && x < groups, "make_plan: id ", x, " is out of range [0, ", groups, ")");
    ++counts[size_t(x)];
  }
  for (int64_t g = 0; g < groups; ++g) offsets[size_t(g) + 1] = offsets[size_t(g)] + counts[size_t(g)];
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < n; ++i) {  // increasing i: stable
    const int64_t slot = next[size_t(v[size_t(i)])]++;
    perm[size_t(slot)] = i;
    inv[size_t(i)] = slot;
  }
  Plan p;
  p.k = k;
  p.groups = groups;
  p.counts = from_vector(counts, {groups});
  p.offsets = from_vector(offsets, {groups + 1});
  p.perm = from_vector(perm, {n});
  p.inverse = from_vector(inv, {n});
  return p;
}

Tensor row_groups(const Plan& p) {
  const auto off = p.offsets.to_vector_as<int64_t>();
  std::vector<int64_t> g(static_cast<size_t>(off.back()));
  for (int64_t e = 0; e < p.groups; ++e)
    std::fill(g.begin() + off[size_t(e)], g.begin() + off[size_t(e) + 1], e);
  return from_vector(g, {off.back()});
}

Tensor permute_rows(const Tensor& x, const Plan& p) {
  HMOE_CHECK(x.dim() == 2 && x.size(0) * p.k == p.perm.numel(), "permute_rows: x ", x.meta_str(),
             " does not match a plan of ", p.perm.numel(), " rows (k = ", p.k, ")");
  const Tensor token = p.perm / full({}, double(p.k), {DType::i64});
  return index_select(x, 0, token);
}

Tensor combine(const Tensor& ys, const Tensor& gates, const Plan& p) {
  HMOE_CHECK(ys.dim() == 2 && ys.size(0) == p.perm.numel(), "combine: ys ", ys.meta_str(), " does not match a plan of ",
             p.perm.numel(), " rows");
  const int64_t T = p.perm.numel() / p.k;
  HMOE_CHECK(gates.dim() == 2 && gates.size(0) == T && gates.size(1) == p.k, "combine: gates ", gates.meta_str(),
             " must be [", T, ", ", p.k, "]");
  const Tensor rows = index_select(ys, 0, p.inverse).reshape({T, p.k, ys.size(1)});
  return sum(rows * gates.to(ys.dtype()).unsqueeze(2), {1});  // j summed in order
}

Tensor unpermute_rows(const Tensor& ys, const Plan& p) {
  HMOE_CHECK(p.k == 1, "unpermute_rows: needs a plan with k = 1");
  return index_select(ys, 0, p.inverse);
}

Patterns selection_patterns(const Tensor& expert_ids, int64_t N) {
  HMOE_CHECK(N >= 1 && N <= 64, "selection_patterns: needs 1 <= N <= 64 experts, got ", N);
  HMOE_CHECK(expert_ids.dim() == 2, "selection_patterns: ids must be [T, k], got ", expert_ids.meta_str());
  const int64_t T = expert_ids.size(0), k = expert_ids.size(1);
  const auto ids = expert_ids.to(DType::i64).contiguous().to_vector_as<int64_t>();
  std::vector<int64_t> bits(static_cast<size_t>(T), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = ids[size_t(t * k + j)];
      HMOE_CHECK(e >= 0 && e < N, "selection_patterns: expert id ", e, " is out of range [0, ", N, ")");
      bits[size_t(t)] |= int64_t(uint64_t(1) << e);
    }
  std::vector<int64_t> distinct = bits;
  std::sort(distinct.begin(), distinct.end(), [](int64_t a, int64_t b) { return uint64_t(a) < uint64_t(b); });
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<int64_t> index(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    index[size_t(t)] = std::lower_bound(distinct.begin(), distinct.end(), bits[size_t(t)],
                                        [](int64_t a, int64_t b) { return uint64_t(a) < uint64_t(b); }) -
                       distinct.begin();
  return {from_vector(distinct, {int64_t(distinct.size())}), from_vector(index, {T})};
}

Tensor grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& offsets) {
  HMOE_CHECK(x.dim() == 2 && w.dim() == 3 && x.size(1) == w.size(1), "grouped_gemm: x ", x.meta_str(),
             " and w ", w.meta_str(), " must be [M, K] and [G, K, N]");
  HMOE_CHECK(offsets.dim() == 1 && offsets.numel() == w.size(0) + 1 && offsets.dtype() == DType::i64,
             "grouped_gemm: offsets must be i64 [G + 1], got ", offsets.meta_str());
  const auto off = offsets.to_vector_as<int64_t>();
  HMOE_CHECK(off.front() == 0 && off.back() == x.size(0), "grouped_gemm: offsets must run from 0 to M = ", x.size(0));
  std::vector<Tensor> parts;
  for (int64_t g = 0; g < w.size(0); ++g) {
    const int64_t m = off[size_t(g) + 1] - off[size_t(g)];
    HMOE_CHECK(m >= 0, "grouped_gemm: offsets must not decrease");
    if (m > 0) parts.push_back(matmul(x.narrow(0, off[size_t(g)], m), w.select(0, g)));
  }
  if (parts.empty()) return zeros({x.size(0), w.size(2)}, {x.dtype(), x.device()});
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

Tensor hyper_adapter(const Tensor& x, const Tensor& token_pattern, const Tensor& w_down, const Tensor& b_down,
                     const Tensor& w_up, const Tensor& b_up) {
  HMOE_CHECK(x.dim() == 2 && w_down.dim() == 3 && w_up.dim() == 3 && b_down.dim() == 2 && b_up.dim() == 2,
             "hyper_adapter: expected x [T, d], w_down [P, d, r], b_down [P, r], w_up [P, r, d], b_up [P, d]");
  const int64_t P = w_down.size(0), d = x.size(1), r = w_down.size(2);
  HMOE_CHECK(w_down.size(1) == d && w_up.shape() == (Shape{P, r, d}) && b_down.shape() == (Shape{P, r}) &&
                 b_up.shape() == (Shape{P, d}),
             "hyper_adapter: adapter shapes ", w_down.meta_str(), ", ", b_down.meta_str(), ", ", w_up.meta_str(), ", ",
             b_up.meta_str(), " do not fit x ", x.meta_str());
  HMOE_CHECK(token_pattern.dim() == 1 && token_pattern.size(0) == x.size(0), "hyper_adapter: token_pattern ",
             token_pattern.meta_str(), " must be [T]");
  const Plan plan = make_plan(token_pattern, P);
  const Tensor groups = row_groups(plan);
  const Tensor xs = permute_rows(x, plan);
  const Tensor h = relu(grouped_gemm(xs, w_down, plan.offsets) + index_select(b_down, 0, groups));
  const Tensor ys = grouped_gemm(h, w_up, plan.offsets) + index_select(b_up, 0, groups);
  return unpermute_rows(ys, plan);
}

}  // namespace hmoe::moe
