// Token dispatch: the routing plan (counts, offsets, a stable permutation and its
// inverse), permute (rows to expert-contiguous order), combine (gate-weighted
// gather-reduce, deterministic), and selection patterns for HyperMoE.
#pragma once

#include <vector>

#include "engine/tensor.h"

namespace hmoe::moe {

struct Plan {
  Tensor counts;   // i64 [G]
  Tensor offsets;  // i64 [G + 1], cpu
  Tensor perm;     // i64 [T*k]: slot -> flat routed index t*k + j (stable: token order kept per group)
  Tensor inverse;  // i64 [T*k]: flat routed index -> slot
  int64_t k = 1;
  int64_t groups = 0;
};

// ids: integer [T, k] (or [T] for k = 1) with values in [0, groups).
Plan make_plan(const Tensor& ids, int64_t groups);
// The group of every slot, i64 [T*k].
Tensor row_groups(const Plan& plan);
// xs[slot] = x[perm[slot] / k]: [T*k, d].
Tensor permute_rows(const Tensor& x, const Plan& plan);
// y[t] = sum_j gates[t, j] * ys[inverse[t*k + j]]: [T, d].
Tensor combine(const Tensor& ys, const Tensor& gates, const Plan& plan);
// The rows of ys back in token order, without gates (k = 1): [T, d].
Tensor unpermute_rows(const Tensor& ys, const Plan& plan);

struct Patterns {
  Tensor patterns;       // i64 [P]: distinct selection bitmasks, ascending
  Tensor token_pattern;  // i64 [T]: index of each token's pattern in `patterns`
};
// Bitmask of each token's selected set (N <= 64), and the distinct ones.
Patterns selection_patterns(const Tensor& expert_ids, int64_t num_experts);

}  // namespace hmoe::moe
