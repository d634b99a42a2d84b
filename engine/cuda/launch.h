// The one launch helper of kernel sources (include after engine/cuda/device_code.h):
// hmoe::cuda::launch_checked launches a kernel and checks the launch; the macro
// HMOE_LAUNCH_CHECKED is the same call, naming the kernel by its expression.
#pragma once

#include <cstddef>
#include <utility>

#include "engine/cuda/device_code.h"
#include "engine/cuda/runtime.h"

namespace hmoe::cuda {

// kernel<<<grid, block, smem, stream>>>(args...), then check_launch naming the kernel
// and its configuration (the emulator's messages name it too). A kernel that asks for
// more dynamic shared memory than a launch gets without opting in is first allowed that
// much (set_max_dynamic_smem). stream: a cudaStream_t or Stream::native().
template <typename S, typename... P, typename... A>
void launch_checked(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, S stream, A&&... args) {
  if (smem > kSmemWithoutOptIn) set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
#if defined(HMOE_EMU)
  check_launch_stream(name, reinterpret_cast<const void*>(stream));  // as a GPU refuses another device's stream
#endif
  ::hmoe::device::launch_kernel(name, kernel, grid, block, smem, stream, std::forward<A>(args)...);
  check_launch(name, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
}

}  // namespace hmoe::cuda

// HMOE_LAUNCH_CHECKED(kernel, grid, block, smem, stream, args...): launch_checked with
// the kernel's name taken from its expression. Grid and block may be integers or dim3.
// A template kernel goes through a pointer variable (auto k = &my_kernel<float>;), or
// call launch_checked with a name.
#define HMOE_LAUNCH_CHECKED(kernel, grid, block, smem, stream, ...)                                            \
  ::hmoe::cuda::launch_checked(#kernel, kernel, static_cast<dim3>((grid)), static_cast<dim3>((block)), (smem), \
                               stream __VA_OPT__(, ) __VA_ARGS__)
