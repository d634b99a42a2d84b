// MoE routers (softmax top-k with optional renormalisation and capacity) and their
// auxiliary losses, all in f32 or wider. See ../shared/spec/hypermoe.md section 1.
#pragma once

#include "engine/tensor.h"

namespace hmoe::moe {

struct RouterConfig {
  int64_t k = 1;
  bool renormalize = false;     // gates divided by their sum over the selected k
  double capacity_factor = 0;   // 0: dropless; else C = ceil(cf * T / N), later tokens dropped (top-1)
};

struct RouterOutput {
  Tensor expert_ids;  // i32 [T, k], ties to the lower expert index
  Tensor gates;       // [T, k], differentiable w.r.t. the logits
  Tensor probs;       // [T, N] softmax over all experts
  Tensor dropped;     // bool [T] with capacity, else undefined
  int64_t num_experts = 0;
};

// logits [T, N] (any float dtype; computed in f32, f64 stays f64).
RouterOutput route(const Tensor& logits, const RouterConfig& cfg);

// N * sum_i f_i P_i (Switch): f_i the fraction of routed slots on expert i, P_i the mean probability.
Tensor load_balancing_loss(const RouterOutput& r);
// cv^2(importance) + cv^2(load), importance_i = sum_t gate_ti; load_i = tokens routed
// to i (hard counts; no gradient).
Tensor cv_squared_loss(const RouterOutput& r, const Tensor& noise_std = Tensor());
// mean over tokens of logsumexp(logits)^2.
Tensor router_z_loss(const Tensor& logits);

}  // namespace hmoe::moe
