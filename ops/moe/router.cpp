// The router op (softmax + top-k + gates in one kernel, one backward kernel), capacity
// flags, dense gates, smooth load and the auxiliary losses.
#include "ops/moe/router.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "ops/broadcast.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/moe/moe_kernels.h"
#include "ops/moe/token_dispatch.h"
#include "ops/reduce.h"

namespace hmoe::moe {

HMOE_DEFINE_STUB(RouterTopkKernel, router_topk_stub);
HMOE_DEFINE_STUB(RouterBackwardKernel, router_backward_stub);
HMOE_DEFINE_STUB(ScatterGatesKernel, scatter_gates_stub);
HMOE_DEFINE_STUB(GatherGatesKernel, gather_gates_stub);
HMOE_DEFINE_STUB(SmoothLoadKernel, smooth_load_stub);
HMOE_DEFINE_STUB(SmoothLoadBackwardKernel, smooth_load_backward_stub);

namespace {
// Router math runs in f32, or f64 when given f64 (gradcheck).
Tensor router_precision(const Tensor& t) { return t.dtype() == DType::f64 ? t : t.to(DType::f32); }

void check_ids_like(const char* op, const Tensor& ids, int64_t T) {
  HMOE_CHECK(ids.dim() == 2 && ids.size(0) == T && (ids.dtype() == DType::i32 || ids.dtype() == DType::i64), op,
             ": expert_ids must be integer [", T, ", k], got ", ids.meta_str());
}
}  // namespace

RouterOutput route_topk(const Tensor& logits_in, int64_t k, const RouterConfig& cfg) {
  HMOE_CHECK(logits_in.defined() && logits_in.dim() == 2 && is_floating(logits_in.dtype()),
             "route_topk: logits must be a float [T, N] tensor, got ",
             logits_in.defined() ? logits_in.meta_str() : std::string("undefined"));
  const int64_t T = logits_in.size(0), N = logits_in.size(1);
  HMOE_CHECK(N >= 1 && k >= 1 && k <= N, "route_topk: k = ", k, " must be in [1, N = ", N, "] for logits ",
             logits_in.meta_str());
  HMOE_CHECK(cfg.capacity_factor >= 0 && std::isfinite(cfg.capacity_factor),
             "route_topk: capacity_factor must be finite and >= 0, got ", cfg.capacity_factor);
  const Tensor logits = router_precision(logits_in).contiguous();
  const Device dev = logits.device();
  const bool renorm = cfg.renormalize.value_or(k > 1);
  RouterOutput r;
  r.num_experts = N;
  r.k = k;
  r.logits = logits;
  r.probs = Tensor::empty({T, N}, {logits.dtype(), dev});
  r.expert_ids = Tensor::empty({T, k}, {DType::i32, dev});
  r.gates = Tensor::empty({T, k}, {logits.dtype(), dev});
  router_topk_stub.get(dev)(logits.detach(), k, renorm, r.probs, r.expert_ids, r.gates);
  autograd::record("route_topk", {logits}, {r.gates, r.probs},
                   [p = r.probs.detach(), ids = r.expert_ids, g = r.gates.detach(), renorm](const std::vector<Tensor>& gr) {
                     Tensor dl = Tensor::empty(p.shape(), {p.dtype(), p.device()});
                     const Tensor dg = gr[0].defined() ? gr[0].to(p.dtype()).contiguous() : Tensor();
                     const Tensor dp = gr[1].defined() ? gr[1].to(p.dtype()).contiguous() : Tensor();
                     router_backward_stub.get(p.device())(p, ids, g, renorm, dg, dp, dl);
                     return std::vector<Tensor>{dl};
                   });
  if (cfg.capacity_factor > 0)
    r.dropped = capacity_drops(r.expert_ids, N, capacity_of(cfg.capacity_factor, T, N));
  return r;
}

int64_t capacity_of(double capacity_factor, int64_t tokens, int64_t num_experts) {
  return int64_t(std::ceil(capacity_factor * double(tokens) / double(num_experts)));
}

Tensor capacity_drops(const Tensor& expert_ids, int64_t num_experts, int64_t capacity, const Tensor& before) {
  check_ids_like("capacity_drops", expert_ids, expert_ids.size(0));
  const Device dev = expert_ids.device();
  // Position priority on the top-1 choice (Switch): a token's rank among the tokens with
  // the same first choice is its slot in a stable k = 1 plan minus its expert's start, so
  // the flags stay on the device (the plan reads back only its N + 1 offsets).
  const Tensor first = expert_ids.select(1, 0).contiguous();
  const Plan plan = make_plan(first, num_experts);
  Tensor rank = plan.inverse - index_select(plan.offsets.to(dev), 0, first);
  if (before.defined()) {
    HMOE_CHECK(before.dim() == 1 && before.size(0) == num_experts && before.dtype() == DType::i64,
               "capacity_drops: before must be i64 [", num_experts, "], got ", before.meta_str());
    rank = rank + index_select(before.to(dev), 0, first);
  }
  return ge(rank, scalar_like(double(capacity), rank));
}

RouterOutput route(const Tensor& logits, const RouterConfig& cfg) { return route_topk(logits, cfg.k, cfg); }

Tensor dense_gates(const Tensor& gates, const Tensor& ids, int64_t N) {
  HMOE_CHECK(gates.defined() && gates.dim() == 2 && is_floating(gates.dtype()),
             "dense_gates: gates must be a float [T, k] tensor, got ", gates.defined() ? gates.meta_str() : "undefined");
  check_ids_like("dense_gates", ids, gates.size(0));
  HMOE_CHECK(ids.size(1) == gates.size(1) && N >= 1, "dense_gates: gates ", gates.meta_str(), " and ids ",
             ids.meta_str(), " differ, or N = ", N, " < 1");
  const Device dev = ops::common_device("dense_gates", {&gates, &ids});
  const Tensor g = router_precision(gates).contiguous();
  Tensor out = Tensor::empty({gates.size(0), N}, {g.dtype(), dev});
  const Tensor idc = ids.contiguous();
  scatter_gates_stub.get(dev)(g.detach(), idc, out);
  autograd::record("dense_gates", {g}, {out}, [idc, k = gates.size(1)](const std::vector<Tensor>& gr) {
    const Tensor d = gr[0].contiguous();
    Tensor dg = Tensor::empty({d.size(0), k}, {d.dtype(), d.device()});
    gather_gates_stub.get(d.device())(d, idc, dg);
    return std::vector<Tensor>{dg};
  });
  return out;
}

Tensor expert_counts(const RouterOutput& r) {
  const Tensor ones_k = ones(r.expert_ids.shape(), {r.probs.dtype(), r.probs.device()});
  return sum(dense_gates(ones_k, r.expert_ids, r.num_experts), {0}).detach();
}

Tensor smooth_load(const Tensor& clean_in, const Tensor& noisy_in, const Tensor& std_in, int64_t k) {
  HMOE_CHECK(clean_in.defined() && noisy_in.defined() && std_in.defined() && clean_in.dim() == 2 &&
                 noisy_in.shape() == clean_in.shape() && std_in.shape() == clean_in.shape() &&
                 is_floating(clean_in.dtype()) && is_floating(noisy_in.dtype()) && is_floating(std_in.dtype()),
             "smooth_load: clean, noisy logits and noise std must be float [T, N] tensors of one shape, got ",
             clean_in.defined() ? clean_in.meta_str() : "undefined", ", ",
             noisy_in.defined() ? noisy_in.meta_str() : "undefined", ", ",
             std_in.defined() ? std_in.meta_str() : "undefined");
  const int64_t N = clean_in.size(1);
  HMOE_CHECK(k >= 1 && k <= N, "smooth_load: k = ", k, " must be in [1, N = ", N, "]");
  const Device dev = ops::common_device("smooth_load", {&clean_in, &noisy_in, &std_in});
  const DType dt = clean_in.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const Tensor c = clean_in.to(dt).contiguous(), z = noisy_in.to(dt).contiguous(), s = std_in.to(dt).contiguous();
  Tensor load = Tensor::empty({N}, {dt, dev});
  smooth_load_stub.get(dev)(c.detach(), z.detach(), s.detach(), k, load);
  autograd::record("smooth_load", {c, z, s}, {load},
                   [c = c.detach(), z = z.detach(), s = s.detach(), k](const std::vector<Tensor>& gr) {
                     Tensor dc = Tensor::empty(c.shape(), {c.dtype(), c.device()});
                     Tensor dz = Tensor::empty(c.shape(), {c.dtype(), c.device()});
                     Tensor ds = Tensor::empty(c.shape(), {c.dtype(), c.device()});
                     smooth_load_backward_stub.get(c.device())(c, z, s, k, gr[0].to(c.dtype()).contiguous(), dc, dz, ds);
                     return std::vector<Tensor>{dc, dz, ds};
                   });
  return load;
}

Tensor cv_squared(const Tensor& v) {
  if (v.numel() <= 1) return zeros({}, {v.dtype(), v.device()});
  return var(v, {0}, false, 0) / (square(mean(v)) + 1e-10);
}

namespace {
// A count summed over the ranks (at least 1, a divisor), read back to the host.
double total_count(int64_t n, const RankSum& over_ranks) {
  return std::max(1.0, over_ranks(full({}, double(n), {DType::f64})).item());
}

// Two statistics of one dtype summed over the ranks in one collective (concatenated,
// summed, split: the same sums element by element).
std::pair<Tensor, Tensor> sum_both_over_ranks(const Tensor& a, const Tensor& b, const RankSum& over_ranks) {
  const Tensor both = over_ranks(cat({a, b}, 0));
  return {both.narrow(0, 0, a.size(0)), both.narrow(0, a.size(0), b.size(0))};
}
}  // namespace

Tensor load_balancing_loss(const RouterOutput& r, const RankSum& over_ranks) {
  if (!over_ranks) {
    const Tensor f = expert_counts(r) / double(std::max<int64_t>(1, r.expert_ids.numel()));
    const Tensor P = mean(r.probs, {0});
    return sum(f * P) * double(r.num_experts);
  }
  // The batch's routed slots are its counts' sum (every slot has an expert), its tokens
  // the slots over k: no collective of their own.
  const auto [counts, prob_sums] = sum_both_over_ranks(expert_counts(r), sum(r.probs, {0}), over_ranks);
  double slots = 0;
  for (double c : counts.to(Device::cpu()).to(DType::f64).to_vector_as<double>()) slots += c;
  const Tensor f = counts / std::max(1.0, slots);
  const Tensor P = prob_sums / std::max(1.0, slots / double(std::max<int64_t>(1, r.expert_ids.size(1))));
  return sum(f * P) * double(r.num_experts);
}

Tensor cv_squared_loss(const RouterOutput& r, const Tensor& noise_std, const Tensor& clean_logits,
                       const RankSum& over_ranks) {
  Tensor importance = sum(dense_gates(r.gates, r.expert_ids, r.num_experts), {0});
  Tensor load = noise_std.defined() && clean_logits.defined() ? smooth_load(clean_logits, r.logits, noise_std, r.k)
                                                              : expert_counts(r);
  if (over_ranks && load.dtype() == importance.dtype()) {
    std::tie(importance, load) = sum_both_over_ranks(importance, load, over_ranks);
  } else if (over_ranks) {
    importance = over_ranks(importance);
    load = over_ranks(load);
  }
  return cv_squared(importance) + cv_squared(load.to(importance.dtype()));
}

Tensor router_z_loss(const Tensor& logits, const RankSum& over_ranks) {
  HMOE_CHECK(logits.defined() && logits.dim() == 2 && is_floating(logits.dtype()),
             "router_z_loss: logits must be a float [T, N] tensor, got ",
             logits.defined() ? logits.meta_str() : "undefined");
  const Tensor z2 = square(logsumexp(router_precision(logits), {1}));
  if (!over_ranks) return mean(z2);
  return over_ranks(sum(z2)) / total_count(logits.size(0), over_ranks);
}

}  // namespace hmoe::moe
