/// @file
/// MoE routers (softmax top-k with optional renormalisation and Switch-style capacity)
/// and their auxiliary losses, all in f32 (f64 stays f64). See shared/spec/hypermoe.md §1.
#pragma once

#include <functional>
#include <optional>

#include "engine/tensor.h"

namespace hmoe::moe {

/// How route() routes.
struct RouterConfig {
  int64_t k = 1;  ///< used by route(); route_topk takes k explicitly
  /// Gates divided by their sum over the selected k. Unset: on for k > 1 (the reference),
  /// off for k = 1 (renormalised top-1 gates are identically 1: no task gradient to the router).
  std::optional<bool> renormalize;
  /// 0: dropless (default). Else C = ceil(cf * T / N) tokens per expert, counted on each
  /// token's top-1 choice in token order (position priority, Switch); later tokens are
  /// flagged in `dropped` (the layer then adds p_max * x for them instead of the experts).
  double capacity_factor = 0;
};

/// What a router returns: each token's experts and gates, the probabilities and drops.
///
/// Noise (noisy top-k: logits += eps * (softplus(x Wnoise) + 0.01)) and Switch's input
/// jitter are the caller's: the router op takes the logits it should route.
struct RouterOutput {
  Tensor expert_ids;        ///< i32 [T, k], best first, ties to the lower expert index
  Tensor gates;             ///< [T, k], differentiable w.r.t. the logits
  Tensor probs;             ///< [T, N] softmax over all experts, differentiable
  Tensor dropped;           ///< b8 [T] with a capacity, else undefined
  Tensor logits;            ///< the routed logits (f32 / f64), kept for the smooth load
  int64_t num_experts = 0;  ///< N, the number of experts
  int64_t k = 0;            ///< experts per token
};

/// Sums a per-rank statistic over the ranks that each route part of one batch (data or
/// expert parallelism), differentiably (ops/dist.h's sum_over_ranks). With it, the aux
/// losses below are those of the whole batch: their counts, sums and token totals are
/// summed over the ranks before the loss is formed. Unset: this process has the batch.
using RankSum = std::function<Tensor(const Tensor&)>;

/// logits [T, N] (any float dtype; computed in f32, f64 stays f64), 1 <= k <= N.
RouterOutput route_topk(const Tensor& logits, int64_t k, const RouterConfig& cfg = {});
RouterOutput route(const Tensor& logits, const RouterConfig& cfg);  ///< route_topk(logits, cfg.k, cfg)
/// Switch's capacity: C = ceil(capacity_factor * tokens / num_experts) per expert.
int64_t capacity_of(double capacity_factor, int64_t tokens, int64_t num_experts);
/// b8 [T]: the tokens of expert_ids [T, k] whose first choice already has `capacity` tokens
/// before them, in token order. before (i64 [N], optional): per expert, the tokens of the
/// batch that come before these (other ranks' parts of it) and chose it first.
Tensor capacity_drops(const Tensor& expert_ids, int64_t num_experts, int64_t capacity, const Tensor& before = Tensor());

/// [T, N] with gates[t, j] at column ids[t, j], zero elsewhere (differentiable in gates).
Tensor dense_gates(const Tensor& gates, const Tensor& expert_ids, int64_t num_experts);
/// Tokens routed to each expert (all k slots), as r.probs' dtype, no gradient: [N].
Tensor expert_counts(const RouterOutput& r);

/// Smooth load (Shazeer et al. 2017, eq. 8-10): load_i = sum_t Phi((clean_ti - thr_ti) / std_ti)
/// where thr_ti is, over the noisy logits of token t, the best unselected value when i is
/// selected (in the top-k) and the worst selected value when it is not. Differentiable
/// w.r.t. clean, noisy (through the thresholds) and std. k = N: every expert is always
/// selected, load_i = T with no gradient. clean, noisy, std: [T, N] float.
Tensor smooth_load(const Tensor& clean_logits, const Tensor& noisy_logits, const Tensor& noise_std, int64_t k);

/// cv^2(v) = var(v) / mean(v)^2 (population variance; 0 for a single element).
Tensor cv_squared(const Tensor& v);
/// N * sum_i f_i P_i (Switch): f_i = fraction of routed slots on expert i (no gradient),
/// P_i = mean router probability of i.
Tensor load_balancing_loss(const RouterOutput& r, const RankSum& over_ranks = {});
/// cv^2(importance) + cv^2(load): importance_i = sum_t of token t's gate on i. load: the
/// smooth load when noise_std and clean_logits are given (training with noisy top-k;
/// r.logits are the noisy logits), else the hard counts (evaluation; no gradient).
Tensor cv_squared_loss(const RouterOutput& r, const Tensor& noise_std = Tensor(), const Tensor& clean_logits = Tensor(),
                       const RankSum& over_ranks = {});
/// mean over tokens of logsumexp(logits)^2 (ST-MoE), in f32 / f64.
Tensor router_z_loss(const Tensor& logits, const RankSum& over_ranks = {});

}  // namespace hmoe::moe
