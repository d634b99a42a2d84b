// When a dist test program skips (exit 77): the nccl backend in the real CUDA build
// needs a GPU per rank of the node, and a backend must be built into the binary.
#pragma once

#include <cstdlib>

#include "engine/dist/communicator.h"
#if defined(HMOE_WITH_CUDA_BACKEND)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::testing::dist {

inline bool cannot_run(hmoe::dist::Backend b) {
  if (!hmoe::dist::backend_built(b)) return true;
#if defined(HMOE_WITH_CUDA_BACKEND)
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (b == hmoe::dist::Backend::nccl && !cuda::is_emulated() && cuda::device_count() < (local ? std::atoi(local) : 1))
    return true;
#endif
  return false;
}

}  // namespace hmoe::testing::dist
