/// @file
/// Token dispatch: the routing plan (counts, offsets, a stable permutation and its
/// inverse), permute (rows to expert-contiguous order), combine (gate-weighted
/// gather-reduce, deterministic), and selection patterns for HyperMoE.
#pragma once

#include "engine/tensor.h"

namespace hmoe::moe {

/// A routing plan: the routed slots (token, choice) sorted stably by group (expert), with
/// counts, offsets, the permutation and its inverse (make_plan).
struct Plan {
  Tensor counts;       ///< i64 [G]: routed slots per group
  Tensor offsets;      ///< i64 [G + 1], host-readable; group g owns slots [offsets[g], offsets[g+1])
  Tensor perm;         ///< i64 [rows]: slot -> flat routed index t*k + j (token order kept per group); -1: padding
  Tensor inverse;      ///< i64 [T*k]: flat routed index -> slot
  int64_t k = 1;       ///< choices per token
  int64_t groups = 0;  ///< G, the number of groups
  int64_t tokens = 0;  ///< T
  int64_t rows = 0;    ///< offsets[G] == T*k without padding
  int64_t pad_to = 1;  ///< each group's extent is a multiple of this
};

/// ids: integer [T, k] (or [T] meaning k = 1) with values in [0, num_groups), k <= num_groups
/// for [T, k]. pad_to >= 1 rounds every group's extent up to a multiple (padding slots
/// have perm -1; permute writes zero rows there, the grouped GEMM reads zero rows).
/// A deterministic counting sort: histogram, exclusive scan, stable placement.
Plan make_plan(const Tensor& ids, int64_t num_groups, int64_t pad_to = 1);
/// The group of every slot, i64 [rows].
Tensor row_groups(const Plan& plan);
/// The token of every slot, i64 [rows]: perm / k, -1 for padding. As the gather index of
/// a grouped GEMM it reads the permuted rows straight from x (no permuted copy).
Tensor slot_tokens(const Plan& plan);
/// xs [rows, d]: xs[slot] = x[perm[slot] / k] (zero for padding). Backward: per token,
/// the sum of its k rows in j order.
Tensor permute_rows(const Tensor& x, const Plan& plan);
/// y [T, d]: y[t] = sum_j gates[t, j] * ys[inverse[t*k + j]], j in order (no atomics);
/// gates [T, k] optional (undefined: weight 1). Backward: dys rows = gate * dy[t],
/// dgates[t, j] = dot(dy[t], ys row).
Tensor combine(const Tensor& ys, const Tensor& gates, const Plan& plan);
/// The rows of ys back in token order (k = 1): combine without gates, [T, d].
Tensor unpermute_rows(const Tensor& ys, const Plan& plan);

/// i64 [T]: bitmask of each token's selected experts (expert_ids [T, k] in [0, N),
/// N <= 64, no expert twice in a row).
Tensor pattern_ids(const Tensor& expert_ids, int64_t num_experts);

/// The distinct selection patterns of a batch and each token's pattern.
struct Patterns {
  Tensor patterns;       ///< i64 [P]: distinct bitmasks, ascending as unsigned
  Tensor token_pattern;  ///< i32 [T]: index of each token's pattern in `patterns`
};
/// Distinct patterns of pattern_ids [T] and each token's index into them.
Patterns unique_patterns(const Tensor& pattern_ids);
/// unique_patterns(pattern_ids(expert_ids, num_experts)).
Patterns selection_patterns(const Tensor& expert_ids, int64_t num_experts);
/// Tokens grouped by pattern: make_plan over token_pattern with k = 1 and P groups.
Plan pattern_plan(const Patterns& p);

}  // namespace hmoe::moe
