// The kernel contracts of the MoE ops (device-neutral: tensors plus sizes) and their
// dispatch stubs. Filled by CPU: ops/moe/cpu/{router,token_dispatch,grouped_gemm}.cpp;
// CUDA: ops/moe/cuda/{router,token_dispatch,grouped_gemm}.cu.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/tensor.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/moe/grouped_gemm.h"

namespace hmoe::moe {

// Every tensor handed to a kernel is contiguous and on one device; "optional" ones may
// be undefined. Float tensors are f32 or f64 (ops widen bf16/f16 first), except the
// grouped GEMM family on the cuda device, which takes bf16/f16 x, w and dy natively
// (tensor cores, f32 accumulation) with scale, bias, db and the row dot in f32; index
// tensors are i64 unless stated.

// --- router ---------------------------------------------------------------------------
// logits [T, N] -> probs [T, N] (softmax), ids i32 [T, k] (top-k of probs, ties to the
// lower index, best first), gates [T, k] (p of the chosen, divided by their sum when
// renormalize). NaN logits are an error.
using RouterTopkKernel = void (*)(const Tensor& logits, int64_t k, bool renormalize, const Tensor& probs,
                                  const Tensor& ids, const Tensor& gates);
// dlogits [T, N] from dgates [T, k] and dprobs [T, N] (either optional).
using RouterBackwardKernel = void (*)(const Tensor& probs, const Tensor& ids, const Tensor& gates, bool renormalize,
                                      const Tensor& dgates, const Tensor& dprobs, const Tensor& dlogits);
// out [T, N] = 0 except out[t, ids[t, j]] += values[t, j] (in j order); ids i32/i64 [T, k].
using ScatterGatesKernel = void (*)(const Tensor& values, const Tensor& ids, const Tensor& out);
// out [T, k] = dense[t, ids[t, j]] (the adjoint of ScatterGates).
using GatherGatesKernel = void (*)(const Tensor& dense, const Tensor& ids, const Tensor& out);
// Smooth load of Shazeer et al.: load [N] = sum_t Phi((clean - threshold) / std); see router.h.
using SmoothLoadKernel = void (*)(const Tensor& clean, const Tensor& noisy, const Tensor& std, int64_t k,
                                  const Tensor& load);
// Its gradients w.r.t. clean, noisy (through the thresholds) and std, from dload [N].
using SmoothLoadBackwardKernel = void (*)(const Tensor& clean, const Tensor& noisy, const Tensor& std, int64_t k,
                                          const Tensor& dload, const Tensor& dclean, const Tensor& dnoisy,
                                          const Tensor& dstd);

// --- plan, permute, combine, patterns ---------------------------------------------------
// ids i32/i64 [T*k] in [0, groups) -> counts i64 [groups], offsets i64 [groups + 1]
// (each group's extent rounded up to pad_to), perm i64 [T*k + groups*(pad_to-1)]
// (slot -> flat routed index t*k + j; -1 for padding slots and past offsets[groups]),
// inverse i64 [T*k]. Stable counting sort. Out-of-range ids are an error.
using PlanKernel = void (*)(const Tensor& ids, int64_t groups, int64_t pad_to, const Tensor& counts,
                            const Tensor& offsets, const Tensor& perm, const Tensor& inverse);
// out [R, d]: row r = slot_scale[perm[r]] * x[perm[r] / k], zero where perm[r] < 0;
// slot_scale [T*k] optional (1).
using PermuteRowsKernel = void (*)(const Tensor& x, const Tensor& perm, int64_t k, const Tensor& slot_scale,
                                   const Tensor& out);
// out [T, d]: row t = sum over j in order of gates[t*k + j] * ys[inverse[t*k + j]]; gates optional (1).
using CombineKernel = void (*)(const Tensor& ys, const Tensor& inverse, int64_t k, const Tensor& gates,
                               const Tensor& out);
// dgates [T, k]: dot(dy[t], ys[inverse[t*k + j]]).
using CombineGateGradKernel = void (*)(const Tensor& dy, const Tensor& ys, const Tensor& inverse, int64_t k,
                                       const Tensor& dgates);
// bits i64 [T]: OR of 1 << ids[t, j]; ids i32/i64 [T, k] in [0, num_experts), no repeats in a row.
using PatternIdsKernel = void (*)(const Tensor& ids, int64_t num_experts, const Tensor& bits);
// Distinct values of bits i64 [T] ascending (as unsigned), and each token's index into
// them (i32 [T]). Allocates its outputs: their size is data-dependent and the host needs it.
using UniquePatternsKernel = void (*)(const Tensor& bits, Tensor& patterns, Tensor& index);

// --- grouped GEMM -----------------------------------------------------------------------
struct GroupedGemmArgs {
  int64_t groups = 0;  // G
  int64_t rows = 0;    // M = offsets[G]: rows of the output
  int64_t k = 0;       // inner dimension
  int64_t n = 0;       // output columns
  int64_t x_rows = 0;  // rows of x (== rows without a gather index)
  bool trans_w = false;  // w is [G, n, k] (use W_g^T) instead of [G, k, n]
  // Steps of the grouped FFN fused into the GEMMs, so that its [M, f] activation and
  // gradient are never stored:
  // x_act: every element of x is read as act(x) (GroupedGemm, GroupedGemmDw);
  // out_act_grad (GroupedGemm, no scale or bias): out holds a pre-activation h on entry
  // and is overwritten with (xrow(r) op(W_g)) * act'(h), the FFN's dh made over h.
  // act: relu, gelu_erf, gelu_tanh or silu (each sends 0 to 0: a gathered -1 row stays 0).
  std::optional<UnaryOp> x_act, out_act_grad;
  // GroupedGemmDw: add to dw and db instead of overwriting them, so a group's rows can be
  // reduced in parts, each continuing the sums the parts before it left (the CPU's f32
  // kernel then gives the bits of one call over all the rows). CPU only.
  bool accumulate = false;
  // GroupedGemm, GroupedGemmDw on the cuda device: whose GEMM runs (the CPU ignores it).
  GroupedGemmBackend backend = GroupedGemmBackend::hmoe;
};
// out [M, n]: row r of group g (offsets[g] <= r < offsets[g+1]) =
//   scale[r] * (xrow(r) op(W_g) + bias[g]),  xrow(r) = index ? x[index[r]] (zero row for
//   index -1) : x[r]. offsets: i64 [G + 1] readable by the host; index, scale, bias optional.
using GroupedGemmKernel = void (*)(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                                   const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out);
// dw [G, k, n] = sum over rows of group g of xrow(r)^T dy[r] and db [G, n] = sum of dy
// rows (both optional; zero for empty groups).
using GroupedGemmDwKernel = void (*)(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index,
                                     const Tensor& dy, const Tensor& offsets, const Tensor& dw, const Tensor& db);
// out [M] = dot(xrow(r), gx[r]) + dot(dy[r], bias[g]) (bias optional): the scale gradient.
using GroupedRowDotKernel = void (*)(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index,
                                     const Tensor& gx, const Tensor& dy, const Tensor& bias, const Tensor& offsets,
                                     const Tensor& out);
// out [x_rows, k] = 0, then out[index[r]] += scale[r] * src[r], summed per destination
// in increasing r (deterministic); index -1 rows skipped; scale optional.
using ScatterRowsKernel = void (*)(const Tensor& src, const Tensor& index, const Tensor& scale, const Tensor& out);

// Input checks shared by the grouped ops (grouped_gemm, grouped_ffn). offsets: a cpu i64
// [groups + 1] tensor from 0, non-decreasing; returns M = offsets[groups].
int64_t check_group_offsets(const char* op, const Tensor& offsets, int64_t groups);
// index: undefined, or integer [M] with values in [-1, x_rows); returns it as contiguous
// i64 (on its device; a device index is read back once to be checked).
Tensor check_gather_index(const char* op, const Tensor& index, int64_t M, const Tensor& x);

}  // namespace hmoe::moe

namespace hmoe::moe {
HMOE_DECLARE_STUB(RouterTopkKernel, router_topk_stub);
HMOE_DECLARE_STUB(RouterBackwardKernel, router_backward_stub);
HMOE_DECLARE_STUB(ScatterGatesKernel, scatter_gates_stub);
HMOE_DECLARE_STUB(GatherGatesKernel, gather_gates_stub);
HMOE_DECLARE_STUB(SmoothLoadKernel, smooth_load_stub);
HMOE_DECLARE_STUB(SmoothLoadBackwardKernel, smooth_load_backward_stub);
HMOE_DECLARE_STUB(PlanKernel, plan_stub);
HMOE_DECLARE_STUB(PermuteRowsKernel, permute_rows_stub);
HMOE_DECLARE_STUB(CombineKernel, combine_stub);
HMOE_DECLARE_STUB(CombineGateGradKernel, combine_gate_grad_stub);
HMOE_DECLARE_STUB(PatternIdsKernel, pattern_ids_stub);
HMOE_DECLARE_STUB(UniquePatternsKernel, unique_patterns_stub);
HMOE_DECLARE_STUB(GroupedGemmKernel, grouped_gemm_stub);
HMOE_DECLARE_STUB(GroupedGemmDwKernel, grouped_gemm_dw_stub);
HMOE_DECLARE_STUB(GroupedRowDotKernel, grouped_row_dot_stub);
HMOE_DECLARE_STUB(ScatterRowsKernel, scatter_rows_stub);
}  // namespace hmoe::moe
