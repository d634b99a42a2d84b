// The one header every kernel source includes. Under nvcc it is the CUDA runtime,
// bf16/fp16 and WMMA headers; under HMOE_EMU it is the SIMT emulator. Both builds get
// the same portable helpers (shared memory declarations, the launch helper).
#pragma once

#include <cstddef>
#include <utility>

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

// Static shared array: HMOE_SHARED(float, tile, [32][33]); scalar: HMOE_SHARED(int, n, ).
#define HMOE_SHARED(type, name, dims) __shared__ type name dims
#define HMOE_SHARED_ALIGNED(align, type, name, dims) __shared__ __align__(align) type name dims
// Dynamic shared memory (size given at launch), viewed as type*. One extern array
// name for every kernel, so kernels with different element types can share a file.
#define HMOE_DYNAMIC_SHARED(type, name)                                   \
  extern __shared__ __align__(128) unsigned char hmoe_dynamic_smem_[];   \
  type* name = reinterpret_cast<type*>(hmoe_dynamic_smem_)

namespace hmoe::device {
using Stream = cudaStream_t;
// Launches kernel<<<grid, block, dynamic_smem, stream>>>(args...). The name is for
// the emulator's messages; errors are read by the caller (cudaGetLastError). The stream
// is a cudaStream_t or the void* that hmoe::cuda::Stream::native() returns.
template <typename S, typename... Params, typename... Args>
inline void launch_kernel(const char* /*name*/, void (*kernel)(Params...), dim3 grid, dim3 block,
                          size_t dynamic_smem, S stream, Args&&... args) {
  kernel<<<grid, block, dynamic_smem, static_cast<Stream>(stream)>>>(std::forward<Args>(args)...);
}
}  // namespace hmoe::device

#elif defined(HMOE_EMU)

#include "engine/emu/emu.h"

#define HMOE_SHARED(type, name, dims) HMOE_EMU_SHARED(type, name, dims)
#define HMOE_SHARED_ALIGNED(align, type, name, dims) HMOE_EMU_SHARED_ALIGNED(align, type, name, dims)
#define HMOE_DYNAMIC_SHARED(type, name) HMOE_EMU_DYNAMIC_SHARED(type, name)

namespace hmoe::device {
// The emulator runs launches synchronously on the calling thread (plus its workers),
// so every stream is already in order; the host runtime layer defines real handles.
using Stream = void*;
template <typename S, typename... Params, typename... Args>
inline void launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_smem,
                          S /*stream*/, Args&&... args) {
  ::hmoe::emu::launch(::hmoe::emu::LaunchConfig{grid, block, dynamic_smem, name}, kernel,
                      std::forward<Args>(args)...);
}
}  // namespace hmoe::device

#else
#error "engine/cuda/device_code.h is for kernel sources: compile with nvcc or define HMOE_EMU"
#endif

// HMOE_LAUNCH(kernel, grid, block, smem, stream, args...): the same line in both builds.
// For a template kernel, pass a pointer variable: auto k = &my_kernel<float, 4>;
#define HMOE_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::hmoe::device::launch_kernel(#kernel, kernel, grid, block, smem, stream __VA_OPT__(, ) __VA_ARGS__)
