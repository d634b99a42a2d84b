// The expert-parallel plan: exchange bytes per layer and rank, FLOPs per token, and the
// step time they predict on a cluster's links and a GPU's compute rate.
#include "tools/hmoe/plan_ep.h"

#include <algorithm>
#include <cstdio>

#include "engine/error.h"
#include "models/hypermoe/shapes.h"

namespace hmoe::tools {

namespace {

// DeepEP's normal (high-throughput) kernels on H800, 4096 tokens, hidden 7168, top-8
// (shared/spec/expert-parallel.md): EP 8 over NVLink 153 GB/s dispatch, 158 combine;
// EP 16 over RDMA 43 / 43. Gradient all-reduce: NCCL's bus bandwidth, about the NVLink
// figure within a node and the RDMA one across nodes.
std::vector<PlanCluster> default_clusters() {
  return {{"EP 8, one node of 8 GPUs (NVLink)", 8, 153, 158, 153},
          {"EP 16, two nodes of 8 GPUs (RDMA between them)", 16, 43, 43, 43}};
}

double mib(double bytes) { return bytes / double(1 << 20); }

// Forward FLOPs per token of one block beside its FFN: the attention's projections and
// its causal core (on average block / 2 keys per query).
double attention_flops(const model::ModelConfig& m) {
  const double d = double(m.d_model), T = double(m.block_size);
  return 8 * d * d + 2 * T * d;
}

void plan_one(const train::Config& cfg_in, const PlanCluster& c, const PlanOptions& o) {
  train::Config cfg = cfg_in;
  model::ModelConfig& m = cfg.model;
  HMOE_CHECK(m.ffn != model::FfnKind::dense, "plan: model.ffn is dense: there are no experts to share");
  HMOE_CHECK(c.ep >= 1 && c.dispatch_gbps > 0 && c.combine_gbps > 0 && c.allreduce_gbps > 0,
             "plan: a cluster needs ep >= 1 and positive bandwidths");
  const int64_t asked = m.n_experts;
  if (m.n_experts % c.ep) m.n_experts = (m.n_experts + c.ep - 1) / c.ep * c.ep;  // each rank needs a whole block
  const model::LmShapes lm = model::lm_shapes(m);
  const double L = double(m.n_layer), Lm = double(lm.moe_layers()), d = double(m.d_model), f = double(m.d_ff);
  const double k = double(m.top_k), E = double(c.ep), V = double(m.vocab_size == 0 ? 256 : m.vocab_size);
  // Tokens each rank holds per optimiser step (its part of batch_size x grad_accum sequences).
  const double T = double(cfg.train.batch_size) * double(cfg.train.grad_accum) * double(m.block_size) / E;
  const double bytes_per_value = m.dtype == DType::f32 ? 4 : 2;
  // Each routed row leaves its rank unless its expert is local (1 / E of them with
  // balanced routing), in the dispatch; it comes back in the combine; the backward does
  // both again with the counts swapped.
  const double rows_out = T * k * (E - 1) / E;
  const double dispatch_bytes = rows_out * d * bytes_per_value, combine_bytes = dispatch_bytes;
  const double layer_comm_s = 2 * (dispatch_bytes / (c.dispatch_gbps * 1e9) + combine_bytes / (c.combine_gbps * 1e9));
  // Compute: forward FLOPs per token, times 3 for forward and backward.
  const double expert_flops = k * 4 * d * f;  // two GEMMs per routed row
  const double router_flops = 2 * d * double(m.n_experts) * (m.noisy ? 2 : 1);
  const double adapter_flops = m.ffn == model::FfnKind::hypermoe ? 4 * d * double(m.adapter_rank) : 0;
  const double dense_ffn_flops = 4 * d * f;
  const double per_token = L * attention_flops(m) + Lm * (expert_flops + router_flops + adapter_flops) +
                           (L - Lm) * dense_ffn_flops + 2 * d * V;
  const double rate = o.peak_tflops * 1e12 * o.mfu;
  const double compute_s = 3 * per_token * T / rate;
  const double layer_expert_s = 3 * expert_flops * T / rate;
  // The replicated parameters' gradients, all-reduced over the world (ring: 2 (W-1)/W of
  // their bytes per rank); the experts' over their expert-data-parallel group, here one rank.
  const model::MoEShapes ms = model::moe_shapes(m);
  const double expert_params =
      Lm * double(shape_numel(ms.w1) + shape_numel(ms.b1) + shape_numel(ms.w2) + shape_numel(ms.b2));
  const double replicated = double(model::count_parameters(m)) - expert_params;
  const double allreduce_s = 2 * (E - 1) / E * replicated * bytes_per_value / (c.allreduce_gbps * 1e9);
  const double comm_s = Lm * layer_comm_s + allreduce_s;
  const double serial_s = compute_s + comm_s, overlapped_s = std::max(compute_s, comm_s);

  std::printf("\n%s: %lld ranks, %lld of %lld experts each%s\n", c.name, static_cast<long long>(c.ep),
              static_cast<long long>(m.n_experts / c.ep), static_cast<long long>(m.n_experts),
              asked == m.n_experts ? "" : " (model.n_experts rounded up: each rank holds a whole block)");
  std::printf("  links: dispatch %.0f GB/s, combine %.0f GB/s, all-reduce %.0f GB/s per rank; compute %.0f TFLOP/s x %.2f\n",
              c.dispatch_gbps, c.combine_gbps, c.allreduce_gbps, o.peak_tflops, o.mfu);
  std::printf("  per rank and step: %.0f tokens (%lld sequences of %lld), top-%lld, %s\n", T,
              static_cast<long long>(cfg.train.batch_size * cfg.train.grad_accum / c.ep),
              static_cast<long long>(m.block_size), static_cast<long long>(m.top_k), std::string(dtype_name(m.dtype)).c_str());
  std::printf("  per MoE layer and step, each rank sends: dispatch %.2f MiB, combine %.2f MiB, forward and backward "
              "%.2f MiB in %.3f ms; its experts compute %.3f ms\n",
              mib(dispatch_bytes), mib(combine_bytes), mib(2 * (dispatch_bytes + combine_bytes)), layer_comm_s * 1e3,
              layer_expert_s * 1e3);
  std::printf("  per step: compute %.2f ms, token exchanges %.2f ms (%lld MoE layers), gradient all-reduce %.2f ms "
              "(%.1f M replicated parameters)\n",
              compute_s * 1e3, Lm * layer_comm_s * 1e3, static_cast<long long>(Lm), allreduce_s * 1e3, replicated / 1e6);
  std::printf("  step time: %.2f ms serial (%.0f tokens/s per GPU), %.2f ms with the exchanges hidden under compute "
              "(%.0f tokens/s per GPU); exchanges are %.0f%% of the serial step\n",
              serial_s * 1e3, T / serial_s, overlapped_s * 1e3, T / overlapped_s, 100 * comm_s / serial_s);
}

}  // namespace

int run_plan_ep(const train::Config& cfg, const PlanOptions& opts) {
  const std::vector<PlanCluster> clusters = opts.clusters.empty() ? default_clusters() : opts.clusters;
  const model::ModelConfig& m = cfg.model;
  std::printf("expert parallelism on paper: %s preset, %lld layers (%lld MoE), d_model %lld, d_ff %lld, %lld experts, "
              "top-%lld, %lld parameters\n",
              m.preset.c_str(), static_cast<long long>(m.n_layer),
              static_cast<long long>(model::lm_shapes(m).moe_layers()), static_cast<long long>(m.d_model),
              static_cast<long long>(m.d_ff), static_cast<long long>(m.n_experts), static_cast<long long>(m.top_k),
              static_cast<long long>(model::count_parameters(m)));
  std::printf("(balanced routing assumed: a routed row leaves its rank with probability (EP-1)/EP; "
              "bandwidths: DeepEP's measured H800 figures unless given)\n");
  for (const PlanCluster& c : clusters) plan_one(cfg, c, opts);
  return 0;
}

}  // namespace hmoe::tools
