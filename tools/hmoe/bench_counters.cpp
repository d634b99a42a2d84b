// `hmoe bench kernels --emu-counters`: the access counters' report per kernel,
// theoretical occupancy from the real build's ptxas table, and a roofline lower bound.
#include "tools/hmoe/bench_counters.h"

#include <algorithm>
#include <cstdio>

#include "engine/cuda/occupancy.h"
#include "engine/cuda/roofline.h"
#include "engine/error.h"
#if defined(HMOE_GPU_EMU)
#include "engine/emu/counters.h"
#endif

namespace hmoe::tools {
#if defined(HMOE_GPU_EMU)
namespace {

constexpr const cuda::GpuPeaks* kGpus[] = {&cuda::kA100, &cuda::kH100};

// The kernel's name as nvcc's build spells it: the emulator's 16-bit float types are
// aliases that demangle under their own names.
std::string cuda_spelling(std::string name) {
  for (const auto& [emu, cuda] :
       {std::pair<std::string, std::string>{"hmoe::emu::detail::Float16<true>", "__nv_bfloat16"},
        {"hmoe::emu::detail::Float16<false>", "__half"}})
    for (size_t p; (p = name.find(emu)) != std::string::npos;) name.replace(p, emu.size(), cuda);
  return name;
}

void print_occupancy(const BenchOptions& o, const std::vector<cuda::PtxasKernel>& table,
                     const emu::counters::KernelCounts& k) {
  if (o.ptxas.empty()) {
    std::printf("  occupancy: pass --ptxas <build-cuda>/ptxas_kernels.tsv (tools/ptxas_gate.sh) for registers\n");
    return;
  }
  for (const cuda::GpuPeaks* g : kGpus) {
    const cuda::PtxasKernel* p = cuda::find_ptxas_kernel(table, cuda_spelling(k.function_name), g->sm->name);
    if (p == nullptr) {
      std::printf("  occupancy %s: kernel not in %s\n", g->sm->name, o.ptxas.c_str());
      continue;
    }
    const cuda::Occupancy oc = cuda::occupancy(p->resources, {k.block_threads, k.dynamic_smem}, *g->sm);
    if (!oc.invalid.empty()) {
      std::printf("  occupancy %s: launch fails: %s\n", g->sm->name, oc.invalid.c_str());
      continue;
    }
    std::printf(
        "  occupancy %s: %.0f%% (%d blocks, %d warps per SM; %d registers, %zu B static + %zu B dynamic smem, "
        "%u threads); limited by %s\n",
        g->sm->name, 100 * oc.fraction, oc.blocks, oc.warps, p->resources.registers, p->resources.static_smem,
        k.dynamic_smem, k.block_threads, oc.limiter.c_str());
  }
}

}  // namespace

void print_access_counters(const BenchOptions& o, const std::string& bench, double min_bytes, double flops,
                           bool f32_peak, const std::function<void()>& run) {
  namespace cnt = emu::counters;
  HMOE_CHECK(cnt::available(),
             "hmoe bench kernels --emu-counters: this emulated build has no access counters; "
             "configure with -DCMAKE_CXX_COMPILER=clang++-16 -DHMOE_EMU_COUNTERS=ON");
  const std::vector<cuda::PtxasKernel> table =
      o.ptxas.empty() ? std::vector<cuda::PtxasKernel>{} : cuda::read_ptxas_table(o.ptxas);
  cnt::reset();
  cnt::set_enabled(true);
  try {
    run();
  } catch (...) {
    cnt::set_enabled(false);
    throw;
  }
  cnt::set_enabled(false);
  const std::vector<cnt::KernelCounts> kernels = cnt::snapshot(true);
  std::printf("=== %s: %zu kernel(s)\n", bench.c_str(), kernels.size());
  uint64_t sectors = 0, wavefronts = 0;
  for (const cnt::KernelCounts& k : kernels) {
    std::printf("%s", cnt::report({k}).c_str());
    print_occupancy(o, table, k);
    sectors += k.unique_sectors;
    wavefronts += cnt::totals(k, true, false).wavefronts + cnt::totals(k, true, true).wavefronts;
  }
  for (const cuda::GpuPeaks* g : kGpus) {
    const cuda::Roofline r = cuda::roofline(*g, {flops, f32_peak, double(sectors) * 32, double(wavefronts), min_bytes});
    std::printf(
        "  roofline %-15s >= %.3f us (%s-bound; FLOPs %.3f, DRAM %.3f, shared %.3f us); ideal %.3f us "
        "(useful FLOPs at peak, %.0f minimum bytes at DRAM bandwidth): %.1f%% of the roofline\n",
        g->name, r.bound_us, r.limiter.c_str(), r.flops_us, r.dram_us, r.shared_us, r.ideal_us, min_bytes,
        100 * r.fraction);
  }
  cnt::reset();
}
#else
void print_access_counters(const BenchOptions&, const std::string&, double, double, bool,
                           const std::function<void()>&) {
  HMOE_CHECK(false, "hmoe bench kernels --emu-counters: needs the emulated build (HMOE_GPU=emu)");
}
#endif

}  // namespace hmoe::tools
