// `hmoe plan ep`: expert parallelism on paper for GPU clusters. For a config, per MoE
// layer and step, the bytes each rank sends in the token exchanges and, from link
// bandwidths (DeepEP's measured figures by default) and a compute rate, the step time a
// W-GPU job would take, with and without the exchanges overlapping compute.
#pragma once

#include <vector>

#include "models/train/config.h"

namespace hmoe::tools {

struct PlanCluster {
  const char* name;           // "EP 8, one node (NVLink)"
  int64_t ep;                 // expert-parallel ranks (= the world: one EP group)
  double dispatch_gbps;       // per-rank algorithm bandwidth of the dispatch exchange, GB/s
  double combine_gbps;        // ... of the combine exchange
  double allreduce_gbps;      // per-rank bus bandwidth of the gradient all-reduce, GB/s
};

struct PlanOptions {
  double peak_tflops = 989.4;  // H100 / H800 SXM dense bf16
  double mfu = 0.5;            // the fraction of peak the compute reaches
  std::vector<PlanCluster> clusters;  // empty: EP 8 on one node and EP 16 over two (DeepEP)
};

// Prints the plan for each cluster; returns 0.
int run_plan_ep(const train::Config& cfg, const PlanOptions& opts);

}  // namespace hmoe::tools
