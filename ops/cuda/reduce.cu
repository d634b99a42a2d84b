// The reduce kernel family on the cuda device (contract: ops/reduce.h, reference:
// ops/cpu/reduce.cpp): sum, max, min, argmax, argmin (first index of ties, NaN wins)
// and logsumexp of a contiguous [outer, red, inner] input into [outer, inner].
// One kernel: a block owns `cols` adjacent inner columns of one outer index and splits
// the reduced dim over `slices` threads per column (thread (c, s) takes rows s, s +
// slices, ... in order), then combines the slices in a fixed shared-memory tree: the
// same bits every run. Sums accumulate in f64 (i64 for integers), as on the CPU.
#include <cmath>
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "ops/cuda/strided.cuh"
#include "ops/dispatch.h"
#include "ops/reduce.h"

namespace hmoe {
HMOE_DECLARE_STUB(ReduceKernel, reduce_stub);
}

namespace hmoe::ops::cuda {
namespace {

template <typename T>
using calc_t = device_compute_t<T>;

template <typename C>
__device__ __forceinline__ bool is_nan(C v) {
  if constexpr (std::is_floating_point_v<C>) return v != v;
  else return false;
}

// Sum: f64 for floats, i64 for integers.
template <typename T>
struct SumOp {
  using Acc = std::conditional_t<std::is_integral_v<calc_t<T>>, int64_t, double>;
  struct State {
    Acc s;
  };
  __device__ static State init() { return {Acc(0)}; }
  __device__ static State from(T x, int64_t) { return {Acc(to_compute<T>(x))}; }
  __device__ static State merge(State a, State b) { return {a.s + b.s}; }
  __device__ static void store(State st, T* y, int64_t*, int64_t at) { y[at] = from_compute<T>(calc_t<T>(st.s)); }
};

// Max / min and their indices: the preferred element is NaN (lowest index among NaNs),
// else the largest (smallest) value, ties to the lowest index. This order does not
// depend on how elements are grouped, so the result equals the CPU's sequential scan.
template <typename T, bool IsMax, bool Index>
struct ExtremeOp {
  using C = calc_t<T>;
  struct State {
    C v;
    int64_t i;  // -1: empty
  };
  __device__ static State init() { return {C(0), -1}; }
  __device__ static State from(T x, int64_t r) { return {to_compute<T>(x), r}; }
  __device__ static bool better(const State& b, const State& a) {
    if (b.i < 0) return false;
    if (a.i < 0) return true;
    if (is_nan(a.v)) return is_nan(b.v) && b.i < a.i;
    if (is_nan(b.v)) return true;
    if (IsMax ? b.v > a.v : b.v < a.v) return true;
    return b.v == a.v && b.i < a.i;
  }
  __device__ static State merge(State a, State b) { return better(b, a) ? b : a; }
  __device__ static void store(State st, T* y, int64_t* yi, int64_t at) {
    if constexpr (Index) yi[at] = st.i;
    else y[at] = from_compute<T>(st.v);
  }
};

// logsumexp as (max m, sum of exp(x - m)); a NaN or infinite max is the result itself.
template <typename T>
struct LseOp {
  using C = calc_t<T>;
  struct State {
    C m, s;
  };
  __device__ static C ninf() { return -INFINITY; }
  __device__ static C ex(C v) {
    if constexpr (std::is_same_v<C, float>) return expf(v);
    else return ::exp(v);
  }
  __device__ static State init() { return {ninf(), C(0)}; }
  __device__ static State from(T x, int64_t) { return {to_compute<T>(x), C(1)}; }
  __device__ static State merge(State a, State b) {
    if (is_nan(a.m) || is_nan(b.m)) return {a.m + b.m, C(1)};
    const C m = a.m > b.m ? a.m : b.m;
    if (m == -ninf() || m == ninf()) return {m, C(1)};
    const C sa = a.m == ninf() ? C(0) : a.s * ex(a.m - m);
    const C sb = b.m == ninf() ? C(0) : b.s * ex(b.m - m);
    return {m, sa + sb};
  }
  __device__ static void store(State st, T* y, int64_t*, int64_t at) {
    C r = st.m;
    if (!is_nan(st.m) && st.m != ninf() && st.m != -ninf()) {
      if constexpr (std::is_same_v<C, float>) r = st.m + logf(st.s);
      else r = st.m + ::log(st.s);
    }
    y[at] = from_compute<T>(r);
  }
};

constexpr int kMaxThreads = 256;

// grid.x = outer * column blocks; block = (cols, slices), cols * slices <= 256.
template <typename T, typename Op>
__global__ void reduce_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ yi, int64_t red,
                              int64_t inner, int64_t col_blocks) {
  using State = typename Op::State;
  HMOE_SHARED(State, part, [kMaxThreads]);
  const int cols = int(blockDim.x), slices = int(blockDim.y);
  const int c = int(threadIdx.x), s = int(threadIdx.y);
  const int64_t o = int64_t(blockIdx.x) / col_blocks;
  const int64_t i = (int64_t(blockIdx.x) % col_blocks) * cols + c;
  State st = Op::init();
  if (i < inner) {
    const T* col = x + o * red * inner + i;
    for (int64_t r = s; r < red; r += slices) st = Op::merge(st, Op::from(col[r * inner], r));
  }
  part[s * cols + c] = st;
  __syncthreads();
  // Fixed pairwise tree over the slices (slices is a power of two).
  for (int w = slices / 2; w >= 1; w /= 2) {
    if (s < w) part[s * cols + c] = Op::merge(part[s * cols + c], part[(s + w) * cols + c]);
    __syncthreads();
  }
  if (s == 0 && i < inner) Op::store(part[c], y, yi, o * inner + i);
}

template <typename T, typename Op>
void launch_reduce(const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner, bool index_out) {
  const int device = in.device().index;
  // inner == 1: one column, 256 slices along the (contiguous) row; else 32 columns
  // (coalesced along inner) by 8 slices.
  int cols = inner == 1 ? 1 : 32, slices = inner == 1 ? 256 : 8;
  while (slices > 1 && int64_t(slices / 2) >= red) slices /= 2;  // short rows: fewer idle threads
  const int64_t col_blocks = (inner + cols - 1) / cols;
  const int64_t blocks = outer * col_blocks;
  HMOE_CHECK(blocks < (int64_t(1) << 31), "reduce: ", blocks, " blocks exceed the grid limit");
  auto k = &reduce_kernel<T, Op>;
  HMOE_LAUNCH_CHECKED(k, unsigned(blocks), dim3(unsigned(cols), unsigned(slices)), 0,
                      hmoe::cuda::current_stream(device).native(), static_cast<const T*>(in.data_ptr<void>()),
                      index_out ? static_cast<T*>(nullptr) : static_cast<T*>(out.data_ptr<void>()),
                      index_out ? out.data_ptr<int64_t>() : static_cast<int64_t*>(nullptr), red, inner, col_blocks);
}

template <typename T>
void reduce_typed(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  switch (op) {
    case ReduceOp::sum: return launch_reduce<T, SumOp<T>>(in, out, outer, red, inner, false);
    case ReduceOp::max: return launch_reduce<T, ExtremeOp<T, true, false>>(in, out, outer, red, inner, false);
    case ReduceOp::min: return launch_reduce<T, ExtremeOp<T, false, false>>(in, out, outer, red, inner, false);
    case ReduceOp::argmax: return launch_reduce<T, ExtremeOp<T, true, true>>(in, out, outer, red, inner, true);
    case ReduceOp::argmin: return launch_reduce<T, ExtremeOp<T, false, true>>(in, out, outer, red, inner, true);
    case ReduceOp::logsumexp:
      if constexpr (std::is_floating_point_v<calc_t<T>>) return launch_reduce<T, LseOp<T>>(in, out, outer, red, inner, false);
      else detail::unsupported_dtype("logsumexp", in.dtype());
  }
}

void reduce_cuda(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  if (outer * inner == 0) return;
  if (op != ReduceOp::sum && op != ReduceOp::logsumexp)
    HMOE_CHECK(red > 0, "max/min: cannot reduce over an empty dimension");
  switch (in.dtype()) {
    case DType::f32: return reduce_typed<float>(op, in, out, outer, red, inner);
    case DType::f64: return reduce_typed<double>(op, in, out, outer, red, inner);
    case DType::bf16: return reduce_typed<__nv_bfloat16>(op, in, out, outer, red, inner);
    case DType::f16: return reduce_typed<__half>(op, in, out, outer, red, inner);
    case DType::i32: return reduce_typed<int32_t>(op, in, out, outer, red, inner);
    case DType::i64: return reduce_typed<int64_t>(op, in, out, outer, red, inner);
    default: detail::unsupported_dtype("reduce", in.dtype());
  }
}

}  // namespace

void register_reduce_cuda() { reduce_stub.set(DeviceType::cuda, &reduce_cuda); }

}  // namespace hmoe::ops::cuda
