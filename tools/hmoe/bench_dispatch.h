// The token-dispatch and router kernels as `hmoe bench kernels` entries: router top-k and
// its backward, the routing plan, permute / combine and their backwards, and the HyperMoE
// adapter's pattern plan and unpermute, each calling its cuda kernel stub directly.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace hmoe::tools {

struct DispatchBench {
  std::string name;
  double bytes = 0, flops = 0;   // per call: minimum bytes moved, useful flops (f32)
  std::function<void(int)> run;  // runs once on input set i
};

// At an MoE layer's shape (emulated: 2048 tokens, d 768; on a GPU: 16384 tokens, d 2048;
// 8 experts, top-2), inputs allocated on cuda:0 once; l2: the device's L2 bytes, to size
// the rotation of the small router inputs.
std::vector<DispatchBench> dispatch_benches(bool emu, size_t l2);

}  // namespace hmoe::tools
