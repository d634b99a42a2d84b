// The CUDA kernel toolkit, the one home of what every kernel source shares: element
// types (the host -> device type map, dtype dispatch to device types, the exact
// conversions to and from the compute type), device math in the compute type, V-wide
// vector packs, fixed-order warp / block reductions and scans, and the mapping of rows
// to groups of lanes (device side and the host's launch plan). Launches go through
// hmoe::cuda::launch_checked (engine/cuda/launch.h); strided indexing and grid sizing
// for flat loops are in ops/cuda/strided.cuh.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "engine/cuda/device_code.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace hmoe::ops::cuda {

// ---- element types -------------------------------------------------------------------------

// The kernel-side type of an engine element type: the half types become CUDA's.
template <typename T>
struct DeviceElement {
  using type = T;
};
template <>
struct DeviceElement<::hmoe::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct DeviceElement<::hmoe::f16> {
  using type = __half;
};
template <typename T>
using device_elem_t = typename DeviceElement<T>::type;

// fn.template operator()<device_elem_t<T>>() for the T that the host dispatcher of the
// same dtype set in engine/dtype.h picks (with its error for a dtype outside the set):
// float = f32 f64 bf16 f16; real = f32 f64; numeric = float + i32 i64; all = numeric + b8.
template <typename Fn>
struct OnDeviceElement {
  Fn& fn;
  template <typename T>
  decltype(auto) operator()() {
    return fn.template operator()<device_elem_t<T>>();
  }
};
template <typename Fn>
decltype(auto) dispatch_device_float(DType t, const char* op, Fn&& fn) {
  return ::hmoe::detail::dispatch_float(t, op, OnDeviceElement<Fn>{fn});
}
template <typename Fn>
decltype(auto) dispatch_device_real(DType t, const char* op, Fn&& fn) {
  return ::hmoe::detail::dispatch_real(t, op, OnDeviceElement<Fn>{fn});
}
template <typename Fn>
decltype(auto) dispatch_device_numeric(DType t, const char* op, Fn&& fn) {
  return ::hmoe::detail::dispatch_numeric(t, op, OnDeviceElement<Fn>{fn});
}
template <typename Fn>
decltype(auto) dispatch_device_all(DType t, const char* op, Fn&& fn) {
  return ::hmoe::detail::dispatch_all(t, op, OnDeviceElement<Fn>{fn});
}

// The type arithmetic on a device element type happens in: half types compute in float.
template <typename T>
struct DeviceCompute {
  using type = T;
};
template <>
struct DeviceCompute<__nv_bfloat16> {
  using type = float;
};
template <>
struct DeviceCompute<__half> {
  using type = float;
};
template <typename T>
using device_compute_t = typename DeviceCompute<T>::type;

// Exact conversions, as the CPU does them: D(compute_t<D>(compute_t<S>(x))). The
// roundings to bf16/f16 are round-to-nearest-even and NaN keeps its sign with the quiet
// bit set, bit for bit like engine/half_bits.h.
template <typename T>
__device__ __forceinline__ device_compute_t<T> to_compute(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __uint_as_float(uint32_t(__bfloat16_as_ushort(x)) << 16);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(x);
  else
    return x;
}

template <typename T>
__device__ __forceinline__ T from_compute(device_compute_t<T> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (v != v) return __ushort_as_bfloat16((unsigned short)((__float_as_uint(v) >> 16) | 0x40u));
    return __float2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    if (v != v) return __ushort_as_half((unsigned short)(((__float_as_uint(v) >> 16) & 0x8000u) | 0x7e00u));
    return __float2half_rn(v);
  } else {
    return v;
  }
}

// to_compute and from_compute through the device's conversion intrinsics alone: the same
// for every number, while a NaN comes out of from_compute_hw as the intrinsic makes it
// (on a GPU not necessarily with from_compute's sign and quiet bit). The softmax, norm
// and attention kernels convert this way.
template <typename T>
__device__ __forceinline__ device_compute_t<T> to_compute_hw(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(x);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(x);
  else
    return x;
}
template <typename T>
__device__ __forceinline__ T from_compute_hw(device_compute_t<T> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return v;
}

template <typename S, typename D>
__device__ __forceinline__ D convert(S x) {
  return from_compute<D>(static_cast<device_compute_t<D>>(to_compute<S>(x)));
}
// The same through the intrinsics (a value of type D is passed through).
template <typename D, typename S>
__device__ __forceinline__ D convert_hw(S x) {
  if constexpr (std::is_same_v<D, S>)
    return x;
  else
    return from_compute_hw<D>(static_cast<device_compute_t<D>>(to_compute_hw<S>(x)));
}

// ---- device math in the compute type (float or double) ------------------------------------
template <typename C>
__device__ __forceinline__ C d_exp(C x) {
  if constexpr (std::is_same_v<C, float>)
    return expf(x);
  else
    return ::exp(x);
}
template <typename C>
__device__ __forceinline__ C d_log(C x) {
  if constexpr (std::is_same_v<C, float>)
    return logf(x);
  else
    return ::log(x);
}
template <typename C>
__device__ __forceinline__ C d_sqrt(C x) {
  if constexpr (std::is_same_v<C, float>)
    return sqrtf(x);
  else
    return ::sqrt(x);
}
template <typename C>
__device__ __forceinline__ C d_rsqrt(C x) {
  if constexpr (std::is_same_v<C, float>)
    return rsqrtf(x);
  else
    return ::rsqrt(x);
}
template <typename C>
__device__ __forceinline__ C d_erfc(C x) {
  if constexpr (std::is_same_v<C, float>)
    return erfcf(x);
  else
    return ::erfc(x);
}
template <typename C>
__device__ __forceinline__ C d_tanh(C x) {
  if constexpr (std::is_same_v<C, float>)
    return tanhf(x);
  else
    return ::tanh(x);
}
template <typename C>
__device__ __forceinline__ C d_log1p(C x) {
  if constexpr (std::is_same_v<C, float>)
    return log1pf(x);
  else
    return ::log1p(x);
}
template <typename C>
__device__ __forceinline__ C d_pow(C x, C y) {
  if constexpr (std::is_same_v<C, float>)
    return powf(x, y);
  else
    return ::pow(x, y);
}
// a * b + c with one rounding. Formulas shared by several kernels write each multiply-add
// this way: left to the compiler, its contraction may differ between two kernels that
// inline the same formula (GCC contracts across statements in the emulator), and then a
// fused kernel would not give the unfused one's bits.
template <typename C>
__device__ __forceinline__ C d_fma(C a, C b, C c) {
  if constexpr (std::is_same_v<C, float>)
    return fmaf(a, b, c);
  else
    return ::fma(a, b, c);
}
template <typename C>
__device__ __forceinline__ C neg_inf() {
  return -C(INFINITY);
}

// x != x for floating types, false for integers (no -Wfloat-equal style surprises).
template <typename C>
__device__ __forceinline__ bool is_nan(C x) {
  if constexpr (std::is_floating_point_v<C>)
    return x != x;
  else
    return false;
}

// ---- vector packs ----------------------------------------------------------------------------

// V consecutive elements moved as one access (16 bytes when V * sizeof(T) == 16).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Elements of T in one 16-byte access.
template <typename T>
inline constexpr int kVec16 = int(16 / sizeof(T));

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
#if defined(HMOE_EMU_COUNTERS)
  return ::hmoe::emu::whole_load<Pack<T, V>>(p);  // one access, as nvcc makes it
#else
  return *reinterpret_cast<const Pack<T, V>*>(p);
#endif
}
template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
#if defined(HMOE_EMU_COUNTERS)
  ::hmoe::emu::whole_store(p, v);
#else
  *reinterpret_cast<Pack<T, V>*>(p) = v;
#endif
}

// Host and device: p is a multiple of `bytes` (a power of two).
__host__ __device__ __forceinline__ bool aligned_to(const void* p, size_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

// ---- warp and block reductions, scans -----------------------------------------------------
// Each is one fixed tree: the order of a kernel's reduction is part of its result's
// bits, so a kernel keeps the tree it was written with (a butterfly from distance 1 up
// is not one from 16 down).

// __shfl_down_sync / __shfl_xor_sync for any trivially copyable value: arithmetic types
// directly, small structs as words of their alignment (8 bytes, or 4 when their members
// are 4-byte types), so a member is never split. arg: the lane delta (down) or lane mask
// (xor).
enum class Shfl : uint8_t { down, xor_ };
template <Shfl kOp, typename W>
__device__ __forceinline__ W shfl_word(W w, unsigned arg, int width) {
  if constexpr (kOp == Shfl::down)
    return __shfl_down_sync(0xffffffffu, w, arg, width);
  else
    return __shfl_xor_sync(0xffffffffu, w, int(arg), width);
}
template <Shfl kOp, typename T>
__device__ __forceinline__ T shfl_any(T v, unsigned arg, int width) {
  if constexpr (std::is_arithmetic_v<T>) {
    return shfl_word<kOp>(v, arg, width);
  } else {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) % 4 == 0 && alignof(T) >= 4,
                  "shfl_any: needs 4-byte words");
    using W = std::conditional_t<alignof(T) >= 8, unsigned long long, unsigned>;
    constexpr int kWords = int(sizeof(T) / sizeof(W));
    W w[kWords];
    memcpy(w, &v, sizeof(T));
#pragma unroll
    for (int k = 0; k < kWords; ++k) w[k] = shfl_word<kOp>(w[k], arg, width);
    memcpy(&v, w, sizeof(T));
    return v;
  }
}

// Combiners for the reductions below. Larger keeps a unless b is larger (a NaN b never
// wins; a NaN a stays).
struct Plus {
  template <typename C>
  __device__ __forceinline__ C operator()(C a, C b) const {
    return a + b;
  }
};
struct Larger {
  template <typename C>
  __device__ __forceinline__ C operator()(C a, C b) const {
    return b > a ? b : a;
  }
};

// Reduces v over each aligned segment of `width` lanes (a power of two, 1..32) of a warp
// as a fixed tree (lane l combines with lane l + width/2, then + width/4, ...);
// combine(a, b) always gets the lower lanes' value first. The result is valid in the
// segment's first lane only. Every lane of the warp must call it with the same width.
template <typename T, typename Combine>
__device__ __forceinline__ T warp_reduce_down(T v, Combine combine, int width = 32) {
  for (int o = width >> 1; o >= 1; o >>= 1) v = combine(v, shfl_any<Shfl::down>(v, unsigned(o), width));
  return v;
}

// Butterfly all-reduce over each aligned segment of `width` lanes (a power of two,
// 1..32): partners at lane distance 1, 2, ..., width / 2 (kHighFirst: width / 2 down to
// 1), v = combine(v, partner's v). Every lane ends with the same bits when combine is
// exactly commutative (a + b, a max, ...). Every lane of the warp must call it.
template <bool kHighFirst = false, typename T, typename Combine>
__device__ __forceinline__ T warp_allreduce(T v, Combine combine, int width = 32) {
  if constexpr (kHighFirst) {
#pragma unroll
    for (int o = width >> 1; o >= 1; o >>= 1) v = combine(v, shfl_any<Shfl::xor_>(v, unsigned(o), width));
  } else {
    for (int o = 1; o < width; o <<= 1) v = combine(v, shfl_any<Shfl::xor_>(v, unsigned(o), width));
  }
  return v;
}

// Reduces v over a 1-d block (blockDim.x a multiple of 32, at most 1024) in a fixed
// order: each warp's tree, then warp 0 combines the warps' results in warp order
// (`identity` pads lanes past the last warp). The result is valid in thread 0 only.
// Every thread of the block must call it; it may be called repeatedly (it begins with
// a barrier, so an earlier call's readers are done with the staging array).
template <typename T, typename Combine>
__device__ T block_reduce_to_first(T v, Combine combine, T identity) {
  HMOE_SHARED(T, staged, [32]);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int warps = int(blockDim.x) >> 5;
  v = warp_reduce_down(v, combine);
  __syncthreads();
  if (lane == 0) staged[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? staged[lane] : identity;
    v = warp_reduce_down(v, combine);
  }
  return v;
}

// Reduces v over a row's group of `group` lanes (a power of two: up to 32 lanes of one
// warp, or the whole block when group == blockDim.x) with the ascending butterfly. Every
// thread must call it (all lanes stay alive for the full-mask shuffles); every lane of
// the group gets the same bits (combine exactly commutative; the warps' partials are
// combined in a fixed order).
template <typename R, typename Combine>
__device__ R group_reduce(R v, int group, Combine combine, R identity) {
  v = warp_allreduce(v, combine, group < 32 ? group : 32);
  if (group <= 32) return v;
  HMOE_SHARED(R, partial, [32]);
  const int lane = int(threadIdx.x) & 31, nwarps = int(blockDim.x) >> 5;
  __syncthreads();  // an earlier call's readers are done with `partial`
  if (lane == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  // Every warp combines the warps' partials with the same butterfly (short dependency
  // chain, no extra barrier); the identity pads lanes past the last warp.
  v = lane < nwarps ? partial[lane] : identity;
  return warp_allreduce(v, combine);
}

// Inclusive scan of v over a warp (shuffle tree, fixed order); lane = threadIdx.x & 31.
template <typename A>
__device__ __forceinline__ A warp_inclusive_scan(A v, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const A u = __shfl_up_sync(0xffffffffu, v, unsigned(d));
    if (lane >= d) v += u;
  }
  return v;
}

// ---- rows to groups of lanes ------------------------------------------------------------------
// A row kernel gives each row of n elements (packs of V) a group of lanes: short rows a
// group of up to 32 lanes of a warp, several rows to a 128-thread block; long rows a
// whole block of 64..kRowMaxBlock threads. A lane holds up to `iters` packs of its row
// in registers, or (iters == 0) streams the row from memory.

// Largest block of the row kernels: 512 threads leave each up to 128 registers, enough
// for a row slice in registers (and f64 exp) without spilling.
inline constexpr int kRowMaxBlock = 512;

// The row of this thread's group and its lane in the group.
struct RowLane {
  int64_t row;
  int lane;
};
__device__ __forceinline__ RowLane row_lane(int group) {
  return {int64_t(blockIdx.x) * (int64_t(blockDim.x) / group) + int64_t(threadIdx.x) / group,
          int(threadIdx.x) & (group - 1)};
}

// The smallest power of two >= v (1 for v <= 1).
inline int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

struct RowPlan {
  int group = 1, block = 128, iters = 0;
  unsigned grid = 1;
};
// Short rows (n <= 1024 and within max_iters packs a lane, or at most 32 packs): groups
// of up to 32 lanes; long rows: one block per row. iters: packs per lane held in
// registers, at most max_iters; 0 = stream the row (rows too long for registers, or
// `stream`). op names the caller in errors.
inline RowPlan plan_rows(const char* op, int64_t rows, int64_t n, int V, int max_iters, bool stream = false) {
  RowPlan p;
  const int64_t units = (n + V - 1) / V;
  if (units <= 32 || (n <= 1024 && units <= 32 * int64_t(max_iters))) {
    p.group = int(units <= 32 ? pow2_ceil(units) : 32);
    p.iters = stream ? 0 : int(pow2_ceil((units + p.group - 1) / p.group));
    p.block = 128;
    const int64_t per_block = p.block / p.group;
    const int64_t grid = (rows + per_block - 1) / per_block;
    HMOE_CHECK(grid <= 0x7fffffff, op, ": too many rows (", rows, ")");
    p.grid = unsigned(grid);
    return p;
  }
  // About four packs per lane (several loads in flight each, few warps to combine).
  const int64_t per_lane = std::min<int64_t>(4, std::max(1, max_iters));
  p.group = p.block =
      int(std::min<int64_t>(kRowMaxBlock, std::max<int64_t>(64, pow2_ceil((units + per_lane - 1) / per_lane))));
  const int64_t iters = pow2_ceil((units + p.block - 1) / p.block);
  p.iters = stream || iters > max_iters ? 0 : int(iters);
  HMOE_CHECK(rows <= 0x7fffffff, op, ": too many rows (", rows, ")");
  p.grid = unsigned(rows);
  return p;
}

// Packs per lane a row kernel may hold in registers: 128 bytes for one row array, 64
// bytes each for two (of the compute type of T).
template <typename T, int V, int Arrays>
constexpr int max_iters() {
  return int(128 / Arrays / sizeof(device_compute_t<T>)) / V;
}

// Calls f(std::integral_constant<int, I>) for the I == iters (0 or a power of two <= Max).
template <int Max, int I = 1, typename F>
void with_iters(const char* op, int iters, F&& f) {
  if (iters == 0) {
    f(std::integral_constant<int, 0>{});
  } else if constexpr (I <= Max) {
    if (iters == I)
      f(std::integral_constant<int, I>{});
    else
      with_iters<Max, I * 2>(op, iters, std::forward<F>(f));
  } else {
    HMOE_FAIL(op, ": no kernel for ", iters, " packs per lane");
  }
}

// ---- host side: tensors as kernel arguments -------------------------------------------------

// A tensor's data as T* (T may be const), nullptr for an undefined tensor.
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr<void>()) : nullptr;
}

}  // namespace hmoe::ops::cuda
