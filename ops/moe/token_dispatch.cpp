// Token dispatch ops: the plan (one fused counting-sort kernel), permute and combine
// (each other's adjoints: permute's backward is a gate-less combine, combine's backward
// a gate-scaled permute plus the gate gradient), and the HyperMoE selection patterns.
#include "ops/moe/token_dispatch.h"

#include <vector>

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::moe {

HMOE_DEFINE_STUB(PlanKernel, plan_stub);
namespace {
// Cost models (ops/dispatch.h). Permute reads each of its output rows from x once.
KernelWork permute_rows_work(const Tensor&, const Tensor& perm, int64_t, const Tensor& slot_scale, const Tensor& out) {
  using ops::distinct_bytes;
  return {slot_scale.defined() ? double(out.numel()) : 0.0,
          2.0 * distinct_bytes(out) + distinct_bytes(perm) + distinct_bytes(slot_scale)};
}
KernelWork combine_work(const Tensor& ys, const Tensor& inverse, int64_t, const Tensor& gates, const Tensor& out) {
  using ops::distinct_bytes;
  return {2.0 * double(ys.numel()),
          distinct_bytes(ys) + distinct_bytes(inverse) + distinct_bytes(gates) + distinct_bytes(out)};
}
KernelWork combine_gate_grad_work(const Tensor& dy, const Tensor& ys, const Tensor& inverse, int64_t,
                                  const Tensor& dgates) {
  using ops::distinct_bytes;
  return {2.0 * double(dgates.numel()) * double(dy.defined() && dy.dim() > 1 ? dy.size(1) : 1),
          distinct_bytes(dy) + distinct_bytes(ys) + distinct_bytes(inverse) + distinct_bytes(dgates)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(PermuteRowsKernel, permute_rows_stub, &permute_rows_work);
HMOE_DEFINE_STUB_WITH_WORK(CombineKernel, combine_stub, &combine_work);
HMOE_DEFINE_STUB_WITH_WORK(CombineGateGradKernel, combine_gate_grad_stub, &combine_gate_grad_work);
HMOE_DEFINE_STUB(PatternIdsKernel, pattern_ids_stub);
HMOE_DEFINE_STUB(UniquePatternsKernel, unique_patterns_stub);

namespace {

bool is_index(DType t) { return t == DType::i32 || t == DType::i64; }

// Float kernels run on f32 / f64; half types go through f32 (differentiably).
DType kernel_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

void check_plan(const char* op, const Plan& p) {
  HMOE_CHECK(p.perm.defined() && p.inverse.defined() && p.k >= 1, op, ": the plan is empty (use make_plan)");
}

Tensor permute_impl(const Tensor& x, const Plan& p, const Tensor& slot_scale) {
  Tensor out = Tensor::empty({p.rows, x.size(1)}, {x.dtype(), x.device()});
  permute_rows_stub.get(x.device())(x, p.perm, p.k, slot_scale, out);
  return out;
}

Tensor combine_impl(const Tensor& ys, const Plan& p, const Tensor& gates) {
  Tensor out = Tensor::empty({p.tokens, ys.size(1)}, {ys.dtype(), ys.device()});
  combine_stub.get(ys.device())(ys, p.inverse, p.k, gates, out);
  return out;
}

}  // namespace

Plan make_plan(const Tensor& ids_in, int64_t num_groups, int64_t pad_to) {
  HMOE_CHECK(ids_in.defined() && is_index(ids_in.dtype()) && (ids_in.dim() == 1 || ids_in.dim() == 2),
             "make_plan: ids must be an integer [T] or [T, k] tensor, got ",
             ids_in.defined() ? ids_in.meta_str() : "undefined");
  HMOE_CHECK(num_groups >= 1, "make_plan: need at least one group, got ", num_groups, " for ids ", ids_in.meta_str());
  HMOE_CHECK(pad_to >= 1, "make_plan: pad_to must be >= 1, got ", pad_to);
  const int64_t T = ids_in.size(0), k = ids_in.dim() == 2 ? ids_in.size(1) : 1;
  HMOE_CHECK(ids_in.dim() == 1 || (k >= 1 && k <= num_groups), "make_plan: k = ", k, " exceeds the ", num_groups,
             " groups (ids ", ids_in.meta_str(), ")");
  const Tensor ids = ids_in.contiguous().reshape({T * k});
  const Device dev = ids.device();
  Plan p;
  p.k = k;
  p.groups = num_groups;
  p.tokens = T;
  p.pad_to = pad_to;
  p.counts = Tensor::empty({num_groups}, {DType::i64, dev});
  p.offsets = Tensor::empty({num_groups + 1}, {DType::i64, dev});
  Tensor perm = Tensor::empty({T * k + num_groups * (pad_to - 1)}, {DType::i64, dev});
  p.inverse = Tensor::empty({T * k}, {DType::i64, dev});
  plan_stub.get(dev)(ids, num_groups, pad_to, p.counts, p.offsets, perm, p.inverse);
  p.offsets = p.offsets.to(Device::cpu());  // the host needs the group extents
  p.rows = p.offsets.data_ptr<int64_t>()[num_groups];
  p.perm = p.rows == perm.numel() ? perm : perm.narrow(0, 0, p.rows).contiguous();
  return p;
}

Tensor row_groups(const Plan& p) {
  check_plan("row_groups", p);
  const int64_t* off = p.offsets.data_ptr<int64_t>();
  std::vector<int64_t> g(static_cast<size_t>(p.rows));
  for (int64_t e = 0; e < p.groups; ++e)
    for (int64_t r = off[e]; r < off[e + 1]; ++r) g[size_t(r)] = e;
  return from_vector(g, {p.rows}).to(p.perm.device());
}

Tensor slot_tokens(const Plan& p) {
  check_plan("slot_tokens", p);
  if (p.k == 1) return p.perm;
  const Device dev = p.perm.device();
  // perm / k truncates -1 (padding) to 0, so padding keeps its -1.
  return where(ge(p.perm, zeros({}, {DType::i64, dev})), div(p.perm, full({}, double(p.k), {DType::i64, dev})), p.perm);
}

Tensor permute_rows(const Tensor& x_in, const Plan& p) {
  check_plan("permute_rows", p);
  HMOE_CHECK(x_in.defined() && x_in.dim() == 2 && x_in.size(0) == p.tokens && is_floating(x_in.dtype()),
             "permute_rows: x must be a float [T = ", p.tokens, ", d] tensor for this plan, got ",
             x_in.defined() ? x_in.meta_str() : "undefined");
  const DType kd = kernel_dtype(x_in.dtype());
  if (kd != x_in.dtype()) return permute_rows(x_in.to(kd), p).to(x_in.dtype());
  ops::common_device("permute_rows", {&x_in, &p.perm});
  const Tensor x = x_in.contiguous();
  Tensor out = permute_impl(x.detach(), p, Tensor());
  autograd::record("permute_rows", {x}, {out}, [p](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{combine_impl(g[0].contiguous(), p, Tensor())};
  });
  return out;
}

Tensor combine(const Tensor& ys_in, const Tensor& gates_in, const Plan& p) {
  check_plan("combine", p);
  HMOE_CHECK(ys_in.defined() && ys_in.dim() == 2 && ys_in.size(0) == p.rows && is_floating(ys_in.dtype()),
             "combine: ys must be a float [", p.rows, ", d] tensor for this plan, got ",
             ys_in.defined() ? ys_in.meta_str() : "undefined");
  HMOE_CHECK(!gates_in.defined() || (gates_in.dim() == 2 && gates_in.size(0) == p.tokens &&
                                     gates_in.size(1) == p.k && is_floating(gates_in.dtype())),
             "combine: gates ", gates_in.defined() ? gates_in.meta_str() : "", " must be float [", p.tokens, ", ",
             p.k, "] for ys ", ys_in.meta_str());
  const DType kd = kernel_dtype(ys_in.dtype());
  if (kd != ys_in.dtype()) return combine(ys_in.to(kd), gates_in, p).to(ys_in.dtype());
  ops::common_device("combine", {&ys_in, &gates_in, &p.perm});
  const Tensor ys = ys_in.contiguous();
  const Tensor gates = gates_in.defined() ? gates_in.to(kd).contiguous() : Tensor();
  Tensor out = combine_impl(ys.detach(), p, gates.defined() ? gates.detach() : Tensor());
  const bool need_g = gates.defined() && gates.requires_grad();
  autograd::record("combine", {ys, gates}, {out},
                   [p, g = gates.defined() ? gates.detach() : Tensor(), y = need_g ? ys.detach() : Tensor(),
                    need_y = ys.requires_grad(), need_g](const std::vector<Tensor>& gr) {
                     const Tensor dy = gr[0].contiguous();
                     Tensor dys = need_y ? permute_impl(dy, p, g) : Tensor();
                     Tensor dg;
                     if (need_g) {
                       dg = Tensor::empty({p.tokens, p.k}, {dy.dtype(), dy.device()});
                       combine_gate_grad_stub.get(dy.device())(dy, y, p.inverse, p.k, dg);
                     }
                     return std::vector<Tensor>{dys, dg};
                   });
  return out;
}

Tensor unpermute_rows(const Tensor& ys, const Plan& p) {
  HMOE_CHECK(p.k == 1, "unpermute_rows: needs a plan with k = 1, got k = ", p.k);
  return combine(ys, Tensor(), p);
}

Tensor pattern_ids(const Tensor& expert_ids, int64_t num_experts) {
  HMOE_CHECK(num_experts >= 1 && num_experts <= 64, "pattern_ids: bitmask patterns need 1 <= N <= 64 experts, got N = ",
             num_experts);
  HMOE_CHECK(expert_ids.defined() && expert_ids.dim() == 2 && is_index(expert_ids.dtype()),
             "pattern_ids: expert_ids must be an integer [T, k] tensor, got ",
             expert_ids.defined() ? expert_ids.meta_str() : "undefined");
  HMOE_CHECK(expert_ids.size(1) <= num_experts, "pattern_ids: k = ", expert_ids.size(1), " exceeds N = ", num_experts);
  Tensor bits = Tensor::empty({expert_ids.size(0)}, {DType::i64, expert_ids.device()});
  pattern_ids_stub.get(expert_ids.device())(expert_ids.contiguous(), num_experts, bits);
  return bits;
}

Patterns unique_patterns(const Tensor& ids) {
  HMOE_CHECK(ids.defined() && ids.dim() == 1 && ids.dtype() == DType::i64,
             "unique_patterns: pattern ids must be an i64 [T] tensor, got ", ids.defined() ? ids.meta_str() : "undefined");
  Patterns p;
  unique_patterns_stub.get(ids.device())(ids.contiguous(), p.patterns, p.token_pattern);
  return p;
}

Patterns selection_patterns(const Tensor& expert_ids, int64_t num_experts) {
  return unique_patterns(pattern_ids(expert_ids, num_experts));
}

Plan pattern_plan(const Patterns& p) {
  return make_plan(p.token_pattern, std::max<int64_t>(1, p.patterns.numel()));
}

}  // namespace hmoe::moe
