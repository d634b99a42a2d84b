// cp.async, the asynchronous global -> shared copy of sm_80 and later, for kernel
// sources of both builds: real PTX under nvcc, the emulator's recorded copies (landed at
// the matching wait, poison before it: engine/emu/async_copy.h) under HMOE_EMU.
#pragma once

#include "engine/cuda/device_code.h"

#if defined(HMOE_EMU)
#include "engine/emu/async_copy.h"
#endif

namespace hmoe::device {

// Starts copying 16 bytes from global `gmem` to shared `smem` (both 16-byte aligned),
// of which the first src_bytes (0 to 16) are read and the rest are zero-filled
// (cp.async.cg: through L2 only, the operand panels are streamed). The data is there
// only after cp_async_wait() covers the group it was committed in.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
#if defined(HMOE_EMU)
  // The runtime checks the addresses and holds the bytes until the wait; the global
  // read and the shared write stay here, in kernel code, so the access counters and
  // TSan see them as this thread's (one 16-byte load, one 16-byte store).
  void* held = ::hmoe::emu::detail::cp_async_issue(smem, gmem, unsigned(src_bytes));
  if (src_bytes == 16)
    *static_cast<uint4*>(held) = *static_cast<const uint4*>(gmem);
  else
    for (int i = 0; i < src_bytes; ++i)
      static_cast<unsigned char*>(held)[i] = static_cast<const unsigned char*>(gmem)[i];
  uint4 poison;
  poison.x = poison.y = poison.z = poison.w = ~0u;
  *static_cast<uint4*>(smem) = poison;  // undefined until the wait: reads before it see NaN
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
#else
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (src_bytes == 16)
    v = *static_cast<const uint4*>(gmem);
  else
    for (int i = 0; i < src_bytes; ++i)
      reinterpret_cast<unsigned char*>(&v)[i] = static_cast<const unsigned char*>(gmem)[i];
  *static_cast<uint4*>(smem) = v;
#endif
}

// Closes this thread's current group of cp.async copies (cp.async.commit_group).
__device__ __forceinline__ void cp_async_commit() {
#if defined(HMOE_EMU)
  ::hmoe::emu::detail::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most the N most recent committed groups of this thread are still in
// flight (cp.async.wait_group N). The copies are then visible to this thread only:
// other threads see them after a __syncthreads.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  static_assert(N >= 0 && N < 8, "cp.async.wait_group takes 0 to 7");
#if defined(HMOE_EMU)
  ::hmoe::emu::detail::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace hmoe::device
