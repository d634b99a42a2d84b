// CUDA built-ins for host compilation: qualifiers, dim3 / vector types, threadIdx,
// blockIdx, blockDim, gridDim, warpSize, and the barrier entry points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <source_location>

// --- qualifiers -----------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// (No __noinline__: as a macro it breaks library headers that spell
// __attribute__((__noinline__)).)
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__
#define __managed__
// A plain __shared__ variable would be one object for every block and every worker
// thread; kernels must use HMOE_SHARED / HMOE_DYNAMIC_SHARED from device_code.h.
#define __shared__ static_assert(false, "hmoe::emu: use HMOE_SHARED or HMOE_DYNAMIC_SHARED instead of __shared__");

// --- index and vector types (global namespace, as CUDA declares them) -------------------
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}  // NOLINT(google-explicit-constructor)
  constexpr operator uint3() const { return uint3{x, y, z}; }  // NOLINT(google-explicit-constructor)
};

#if defined(HMOE_EMU_COUNTERS)
// Access-counting builds (clang): clang vector types, so that copying one is one 8- or
// 16-byte load or store, as LDG.64 / LDG.128 on a GPU (a struct copy is a memcpy, which
// the load/store instrumentation does not see). Same size, alignment and members.
#define HMOE_EMU_VEC2(T, name, al)                                             \
  typedef T name __attribute__((ext_vector_type(2)));                          \
  static_assert(alignof(name) == (al) && sizeof(name) == 2 * sizeof(T));       \
  inline constexpr name make_##name(T x, T y) { return name{x, y}; }
#define HMOE_EMU_VEC4(T, name, al)                                             \
  typedef T name __attribute__((ext_vector_type(4)));                          \
  static_assert(alignof(name) == (al) && sizeof(name) == 4 * sizeof(T));       \
  inline constexpr name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
namespace hmoe::emu {
// One load or store of a whole trivially copyable P (a vector pack) in access-counting
// builds: clang would split a struct copy whose fields are used one by one into per-field
// accesses, where nvcc emits one 8- or 16-byte access.
template <typename P>
inline P whole_load(const void* p) {
  if constexpr (sizeof(P) % 4 == 0) {
    typedef unsigned W __attribute__((ext_vector_type(sizeof(P) / 4)));
    const W w = *static_cast<const volatile W*>(p);  // volatile: never split or narrowed
    return __builtin_bit_cast(P, w);
  } else {
    return *static_cast<const P*>(p);
  }
}
template <typename P>
inline void whole_store(void* p, const P& v) {
  if constexpr (sizeof(P) % 4 == 0) {
    typedef unsigned W __attribute__((ext_vector_type(sizeof(P) / 4)));
    *static_cast<volatile W*>(p) = __builtin_bit_cast(W, v);
  } else {
    *static_cast<P*>(p) = v;
  }
}
}  // namespace hmoe::emu
#else
#define HMOE_EMU_VEC2(T, name, al) \
  struct alignas(al) name {        \
    T x, y;                        \
  };                               \
  inline constexpr name make_##name(T x, T y) { return name{x, y}; }
#define HMOE_EMU_VEC4(T, name, al) \
  struct alignas(al) name {        \
    T x, y, z, w;                  \
  };                               \
  inline constexpr name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
#endif
HMOE_EMU_VEC2(float, float2, 8)
HMOE_EMU_VEC4(float, float4, 16)
HMOE_EMU_VEC2(int, int2, 8)
HMOE_EMU_VEC4(int, int4, 16)
HMOE_EMU_VEC2(unsigned int, uint2, 8)
HMOE_EMU_VEC4(unsigned int, uint4, 16)
HMOE_EMU_VEC2(double, double2, 16)
HMOE_EMU_VEC2(long long, longlong2, 16)
HMOE_EMU_VEC4(unsigned char, uchar4, 4)
HMOE_EMU_VEC4(signed char, char4, 4)
HMOE_EMU_VEC4(unsigned short, ushort4, 8)
#undef HMOE_EMU_VEC2
#undef HMOE_EMU_VEC4
inline constexpr uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
struct float3 {
  float x, y, z;
};
inline constexpr float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }

inline constexpr int warpSize = 32;

namespace hmoe::emu::detail {

// What a running CUDA thread and its block expose to kernel code. The runtime's
// ThreadState and BlockState derive from these; the thread-local pointers are set by
// the scheduler before every switch into a fiber (a block never leaves its OS thread).
struct ThreadBuiltins {
  uint3 thread_idx;
  unsigned linear;  // x + y*bx + z*bx*by
  unsigned lane;    // linear % 32
  unsigned warp;    // linear / 32
};
struct BlockBuiltins {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  bool preempt = false;  // random schedule: atomics and fences may switch threads
};

extern thread_local constinit ThreadBuiltins* t_thread;
extern thread_local constinit BlockBuiltins* t_block;

[[noreturn]] void outside_kernel(const char* what);

inline ThreadBuiltins& current_thread() {
  if (t_thread == nullptr) [[unlikely]]
    outside_kernel("threadIdx");
  return *t_thread;
}
inline BlockBuiltins& current_block() {
  if (t_block == nullptr) [[unlikely]]
    outside_kernel("blockIdx/blockDim/gridDim");
  return *t_block;
}

enum class BarrierKind : uint8_t { plain, count, all, any };
// Blocks the calling CUDA thread at a __syncthreads-style barrier; returns the
// reduced predicate for the counting variants (0 for a plain barrier).
int barrier(const char* file, int line, BarrierKind kind, int predicate);
// Lets the scheduler run another thread (random schedule only; no-op otherwise).
void preempt_slow();
inline void preemption_point() {
  if (t_block != nullptr && t_block->preempt) [[unlikely]]
    preempt_slow();
}
[[noreturn]] void trap(const char* file, int line);

}  // namespace hmoe::emu::detail

#define threadIdx (static_cast<const uint3&>(::hmoe::emu::detail::current_thread().thread_idx))
#define blockIdx (static_cast<const uint3&>(::hmoe::emu::detail::current_block().block_idx))
#define blockDim (static_cast<const dim3&>(::hmoe::emu::detail::current_block().block_dim))
#define gridDim (static_cast<const dim3&>(::hmoe::emu::detail::current_block().grid_dim))

#define __syncthreads() ::hmoe::emu::detail::barrier(__FILE__, __LINE__, ::hmoe::emu::detail::BarrierKind::plain, 0)
#define __syncthreads_count(p) \
  ::hmoe::emu::detail::barrier(__FILE__, __LINE__, ::hmoe::emu::detail::BarrierKind::count, (p) ? 1 : 0)
#define __syncthreads_and(p) \
  ::hmoe::emu::detail::barrier(__FILE__, __LINE__, ::hmoe::emu::detail::BarrierKind::all, (p) ? 1 : 0)
#define __syncthreads_or(p) \
  ::hmoe::emu::detail::barrier(__FILE__, __LINE__, ::hmoe::emu::detail::BarrierKind::any, (p) ? 1 : 0)
#define __trap() ::hmoe::emu::detail::trap(__FILE__, __LINE__)
