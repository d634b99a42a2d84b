// The elementwise kernel family on the cuda device (contract: ops/elementwise.h;
// reference: ops/cpu/elementwise.cpp): every UnaryOp and the activations' backward,
// every BinaryOp (comparisons into bool), and where. Inputs arrive expanded to the
// output's shape, possibly strided (broadcast dims have stride 0). Each op is a
// compile-time functor, so a kernel's inner loop has no op switch. Three kernel shapes:
// dense (every operand contiguous or a broadcast scalar: 16-byte vector loads and
// stores when aligned, scalar tail, grid-stride), rows (two dims, inputs contiguous or
// broadcast along a row: bias adds, row scales; vectorised per row) and strided
// (coalesced layout of rank <= 8 passed by value). Half types compute in f32, f64 in
// f64, integers as integers.
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/cuda/unary_fn.cuh"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/elementwise_kernels.h"

namespace hmoe::ops::cuda {
namespace {

constexpr int kThreads = 256;

// Ops defined for integer tensors too; the others need a floating type (as on the CPU).
constexpr bool integer_ok(UnaryOp op) {
  return op == UnaryOp::neg || op == UnaryOp::abs || op == UnaryOp::square || op == UnaryOp::sign ||
         op == UnaryOp::mul_scalar || op == UnaryOp::add_scalar || op == UnaryOp::clamp || op == UnaryOp::relu;
}

// clang-format off: one line per type or op reads as a table
constexpr bool is_comparison(BinaryOp op) { return op >= BinaryOp::eq; }

// z = x op y: C for arithmetic, bool for comparisons. maximum/minimum propagate a NaN in
// x or y (x's NaN when both are), as the CPU does.
template <BinaryOp K, typename C>
struct BinaryFn {
  __device__ __forceinline__ auto operator()(C x, C y) const {
    if constexpr (K == BinaryOp::add)
      return C(x + y);
    else if constexpr (K == BinaryOp::sub)
      return C(x - y);
    else if constexpr (K == BinaryOp::mul)
      return C(x * y);
    else if constexpr (K == BinaryOp::div)
      return C(x / y);  // integers: IntDivFn
    else if constexpr (K == BinaryOp::maximum)
      return (is_nan(x) || x > y) ? x : y;
    else if constexpr (K == BinaryOp::minimum)
      return (is_nan(x) || x < y) ? x : y;
    else if constexpr (K == BinaryOp::eq)
      return x == y;
    else if constexpr (K == BinaryOp::ne)
      return x != y;
    else if constexpr (K == BinaryOp::lt)
      return x < y;
    else if constexpr (K == BinaryOp::le)
      return x <= y;
    else if constexpr (K == BinaryOp::gt)
      return x > y;
    else {
      static_assert(K == BinaryOp::ge, "BinaryFn: unhandled op");
      return x >= y;
    }
  }
};

// clang-format on

// Integer division; a zero divisor sets *flag (the host then raises the CPU's error).
template <typename C>
struct IntDivFn {
  int* flag;
  __device__ __forceinline__ C operator()(C x, C y) const {
    if (y == C(0)) {
      atomicOr(flag, 1);
      return C(0);
    }
    return x / y;
  }
};

struct LogicalNotFn {
  __device__ __forceinline__ bool operator()(bool x) const { return !x; }
};

// Wraps an op on compute values into one on stored values of type Out (half types go
// through f32 with the CPU's exact rounding; bool and integers pass as they are).
template <typename Out, typename F>
struct Stored {
  F f;
  template <typename... In>
  __device__ __forceinline__ Out operator()(In... x) const {
    if constexpr (std::is_same_v<Out, bool>)
      return bool(f(to_compute<In>(x)...));
    else
      return from_compute<Out>(f(to_compute<In>(x)...));
  }
};

// where: moves the selected element's bits (W is the unsigned integer of its width).
template <typename W>
struct SelectFn {
  __device__ __forceinline__ W operator()(bool c, W a, W b) const { return c ? a : b; }
};

// ---- the three kernel shapes ----------------------------------------------------------------

// A dense operand: `step` is 1 (contiguous) or 0 (one value broadcast to every element).
template <typename T>
struct Src {
  const T* p;
  int64_t step;
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_src(const Src<T>& s, int64_t i) {
  if (s.step == 0) {
    Pack<T, V> r;
    const T x = s.p[0];
#pragma unroll
    for (int j = 0; j < V; ++j) r.v[j] = x;
    return r;
  }
  return load_pack<T, V>(s.p + i);
}

template <int V, typename F, typename Out, typename... In>
__device__ __forceinline__ void apply_pack(const F& f, Out* out, const Pack<In, V>&... x) {
  Pack<Out, V> o;
#pragma unroll
  for (int j = 0; j < V; ++j) o.v[j] = f(x.v[j]...);
  store_pack<Out, V>(out, o);
}

// out[i] = f(in...[i]) over n elements, every operand contiguous (or a broadcast
// scalar). With `vec` (every contiguous pointer aligned to its pack), each thread moves
// V elements per step as one access per operand (16 bytes for the widest type), and the
// n % V tail goes element by element; without it, element by element throughout.
// Launch: 1-d grid of kThreads-thread blocks, grid-stride.
template <int V, typename F, typename Out, typename... In>
__global__ void map_dense_kernel(F f, Out* __restrict__ out, int64_t n, bool vec, Src<In>... in) {
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / V;
    for (int64_t v = tid; v < nv; v += step) apply_pack<V>(f, out + v * V, load_src<V>(in, v * V)...);
    done = nv * V;
  }
  for (int64_t i = done + tid; i < n; i += step) out[i] = f(in.p[i * in.step]...);
}

// A row-broadcast operand of a 2-d layout: element (r, c) is p[r * row + c * step],
// step 1 (contiguous along the row) or 0 (one value per row); row may be 0 too.
template <typename T>
struct RowSrc {
  const T* p;
  int64_t row, step;
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_row(const RowSrc<T>& s, int64_t r, int64_t c) {
  return load_src<V>(Src<T>{s.p + r * s.row, s.step}, c);
}

// q = i / d, m = i % d, in 32 bits when both fit (much cheaper on the GPU).
__device__ __forceinline__ void div_mod(int64_t i, int64_t d, int64_t& q, int64_t& m) {
  if (((uint64_t(i) | uint64_t(d)) >> 32) == 0) {
    q = int64_t(uint32_t(i) / uint32_t(d));
  } else {
    q = i / d;
  }
  m = i - q * d;
}

// out[r][c] = f(in...[r][c]) over a contiguous [rows, cols] output whose inputs are
// each contiguous or broadcast along a row, with any row stride (bias adds, row
// scales, column slices). With `vec` (cols % V == 0, every row start aligned), each
// thread moves V elements of one row per step; otherwise element by element. Launch: as
// map_dense_kernel.
template <int V, typename F, typename Out, typename... In>
__global__ void map_rows_kernel(F f, Out* __restrict__ out, int64_t rows, int64_t cols, bool vec, RowSrc<In>... in) {
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  if (vec) {
    const int64_t per_row = cols / V, nv = rows * per_row;
    for (int64_t v = tid; v < nv; v += step) {
      int64_t r, c;
      div_mod(v, per_row, r, c);
      c *= V;
      apply_pack<V>(f, out + r * cols + c, load_row<V>(in, r, c)...);
    }
    return;
  }
  for (int64_t i = tid; i < rows * cols; i += step) {
    int64_t r, c;
    div_mod(i, cols, r, c);
    out[i] = f(in.p[r * in.row + c * in.step]...);
  }
}

template <typename F, typename Out, size_t... I, typename... In>
__device__ __forceinline__ void apply_at(const F& f, Out* out, const int64_t* off, std::index_sequence<I...>,
                                         const In*... in) {
  out[off[sizeof...(In)]] = f(in[off[I]]...);
}

// The general case: element i's offsets (inputs first, the output last) come from the
// coalesced layout. Launch: as map_dense_kernel.
template <int N, typename F, typename Out, typename... In>
__global__ void map_strided_kernel(F f, Out* __restrict__ out, int64_t n, StridedLayout<N> layout, const In*... in) {
  static_assert(N == int(sizeof...(In)) + 1, "map_strided_kernel: one layout operand per input, plus the output");
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N];
    layout.offsets(i, off);
    apply_at(f, out, off, std::index_sequence_for<In...>{}, in...);
  }
}

// Runs out = f(ins...) elementwise; Out and In are the kernel-side storage types. Picks
// the dense kernel, the rows kernel or the general strided one from the coalesced layout.
template <typename Out, typename... In>
struct Map {
  static constexpr int N = int(sizeof...(In)) + 1;
  static constexpr size_t kWidest = std::max({sizeof(Out), sizeof(In)...});
  static constexpr int V = int(16 / kWidest);

  template <typename F>
  static void run(const F& f, const Tensor& out, const std::array<const Tensor*, sizeof...(In)>& ins) {
    run_seq(f, out, ins, std::index_sequence_for<In...>{});
  }

 private:
  template <typename F, size_t... I>
  static void run_seq(const F& f, const Tensor& out, const std::array<const Tensor*, sizeof...(In)>& ins,
                      std::index_sequence<I...>) {
    const int64_t n = out.numel();
    if (n == 0) return;
    const int device = out.device().index;
    const auto& stream = hmoe::cuda::current_stream(device);
    const StridedLayout<N> L = make_layout<N>(out.shape(), {&ins[I]->strides()..., &out.strides()});
    Out* o = static_cast<Out*>(out.data_ptr<void>());
    const std::array<const void*, sizeof...(In)> p = {ins[I]->template data_ptr<void>()...};
    // Dense: a single coalesced dim (or one element) where the output is contiguous and
    // each input contiguous or broadcast.
    bool dense = L.rank == 0 || (L.rank == 1 && L.strides[N - 1][0] == 1);
    for (int k = 0; k + 1 < N && dense && L.rank == 1; ++k) dense = L.strides[k][0] == 0 || L.strides[k][0] == 1;
    if (dense) {
      auto step = [&](size_t k) { return L.rank == 0 ? int64_t(0) : L.strides[k][0]; };
      bool vec = aligned_to(o, V * sizeof(Out));
      ((vec = vec && (step(I) == 0 || aligned_to(p[I], V * sizeof(In)))), ...);
      auto k = &map_dense_kernel<V, F, Out, In...>;
      HMOE_LAUNCH_CHECKED(k, flat_blocks((n + V - 1) / V, device, kThreads), kThreads, 0, stream.native(), f, o, n, vec,
                          Src<In>{static_cast<const In*>(p[I]), step(I)}...);
      return;
    }
    // Rows: two coalesced dims, the output contiguous, each input contiguous or broadcast
    // along the inner one (any outer stride).
    bool rows = L.rank == 2 && L.strides[N - 1][1] == 1 && L.strides[N - 1][0] == L.sizes[1];
    for (int k = 0; k + 1 < N && rows; ++k) rows = L.strides[k][1] == 0 || L.strides[k][1] == 1;
    if (rows) {
      const int64_t cols = L.sizes[1];
      // A contiguous input's row starts are aligned when its base and row stride are.
      auto row_ok = [&](size_t k, size_t elem) {
        return L.strides[k][1] == 0 || (aligned_to(p[k], V * elem) && L.strides[k][0] % V == 0);
      };
      bool vec = cols % V == 0 && aligned_to(o, V * sizeof(Out));
      ((vec = vec && row_ok(I, sizeof(In))), ...);
      auto k = &map_rows_kernel<V, F, Out, In...>;
      HMOE_LAUNCH_CHECKED(k, flat_blocks(vec ? n / V : n, device, kThreads), kThreads, 0, stream.native(), f, o,
                          L.sizes[0], cols, vec,
                          RowSrc<In>{static_cast<const In*>(p[I]), L.strides[I][0], L.strides[I][1]}...);
      return;
    }
    auto k = &map_strided_kernel<N, F, Out, In...>;
    HMOE_LAUNCH_CHECKED(k, flat_blocks(n, device, kThreads), kThreads, 0, stream.native(), f, o, n, L,
                        static_cast<const In*>(p[I])...);
  }
};

// ---- host dispatch ---------------------------------------------------------------------------

// fn.template operator()<K>() with the op as a compile-time constant.
template <typename Fn>
void with_unary_op(UnaryOp op, Fn&& fn) {
  switch (op) {
#define HMOE_UNARY_CASE_(K) \
  case UnaryOp::K:          \
    return fn.template operator()<UnaryOp::K>();
    HMOE_UNARY_CASE_(neg)
    HMOE_UNARY_CASE_(exp)
    HMOE_UNARY_CASE_(log)
    HMOE_UNARY_CASE_(sqrt)
    HMOE_UNARY_CASE_(rsqrt)
    HMOE_UNARY_CASE_(abs)
    HMOE_UNARY_CASE_(relu)
    HMOE_UNARY_CASE_(gelu_erf)
    HMOE_UNARY_CASE_(gelu_tanh)
    HMOE_UNARY_CASE_(silu)
    HMOE_UNARY_CASE_(sigmoid)
    HMOE_UNARY_CASE_(tanh)
    HMOE_UNARY_CASE_(softplus)
    HMOE_UNARY_CASE_(pow_scalar)
    HMOE_UNARY_CASE_(clamp)
    HMOE_UNARY_CASE_(mul_scalar)
    HMOE_UNARY_CASE_(add_scalar)
    HMOE_UNARY_CASE_(sign)
    HMOE_UNARY_CASE_(square)
#undef HMOE_UNARY_CASE_
    case UnaryOp::logical_not:
      break;  // bool-only; handled by the caller
  }
  HMOE_FAIL("unary op: unknown op ", int(op));
}

template <typename Fn>
void with_binary_op(BinaryOp op, Fn&& fn) {
  switch (op) {
#define HMOE_BINARY_CASE_(K) \
  case BinaryOp::K:          \
    return fn.template operator()<BinaryOp::K>();
    HMOE_BINARY_CASE_(add)
    HMOE_BINARY_CASE_(sub)
    HMOE_BINARY_CASE_(mul)
    HMOE_BINARY_CASE_(div)
    HMOE_BINARY_CASE_(maximum)
    HMOE_BINARY_CASE_(minimum)
    HMOE_BINARY_CASE_(eq)
    HMOE_BINARY_CASE_(ne)
    HMOE_BINARY_CASE_(lt)
    HMOE_BINARY_CASE_(le)
    HMOE_BINARY_CASE_(gt)
    HMOE_BINARY_CASE_(ge)
#undef HMOE_BINARY_CASE_
  }
  HMOE_FAIL("binary op: unknown op ", int(op));
}

void unary_cuda(UnaryOp op, const Tensor& in, const Tensor& out, double p0, double p1) {
  if (op == UnaryOp::logical_not) return Map<bool, bool>::run(LogicalNotFn{}, out, {&in});
  dispatch_device_numeric(in.dtype(), "unary op", [&]<typename T>() {
    using C = device_compute_t<T>;
    with_unary_op(op, [&]<UnaryOp K>() {
      if constexpr (!std::is_floating_point_v<C> && !integer_ok(K)) {
        hmoe::detail::unsupported_dtype("unary op", in.dtype());
      } else if constexpr (K == UnaryOp::pow_scalar) {
        if (p0 == 2.0) return Map<T, T>::run(Stored<T, UnaryFn<UnaryOp::square, T>>{{C(p0), C(p1)}}, out, {&in});
        Map<T, T>::run(Stored<T, UnaryFn<K, T>>{{C(p0), C(p1)}}, out, {&in});
      } else {
        Map<T, T>::run(Stored<T, UnaryFn<K, T>>{{C(p0), C(p1)}}, out, {&in});
      }
    });
  });
}

void unary_backward_cuda(UnaryOp op, const Tensor& x, const Tensor& g, const Tensor& gi, double p0, double p1) {
  HMOE_CHECK(g.dtype() == x.dtype() && gi.dtype() == x.dtype(), "unary backward: dtypes differ (", x.meta_str(), ", ",
             g.meta_str(), ", ", gi.meta_str(), ")");
  dispatch_device_numeric(x.dtype(), "unary backward", [&]<typename T>() {
    using C = device_compute_t<T>;
    if constexpr (!std::is_floating_point_v<C>) {
      hmoe::detail::unsupported_dtype("unary backward", x.dtype());
    } else {
      auto run = [&]<UnaryOp K>() { Map<T, T, T>::run(Stored<T, UnaryGradFn<K, T>>{{C(p0), C(p1)}}, gi, {&x, &g}); };
      switch (op) {
        case UnaryOp::relu:
          return run.template operator()<UnaryOp::relu>();
        case UnaryOp::clamp:
          return run.template operator()<UnaryOp::clamp>();
        case UnaryOp::gelu_erf:
          return run.template operator()<UnaryOp::gelu_erf>();
        case UnaryOp::gelu_tanh:
          return run.template operator()<UnaryOp::gelu_tanh>();
        case UnaryOp::silu:
          return run.template operator()<UnaryOp::silu>();
        case UnaryOp::sigmoid:
          return run.template operator()<UnaryOp::sigmoid>();
        case UnaryOp::tanh:
          return run.template operator()<UnaryOp::tanh>();
        case UnaryOp::softplus:
          return run.template operator()<UnaryOp::softplus>();
        default:
          hmoe::detail::unsupported_dtype("unary backward", x.dtype());  // the CPU's message
      }
    }
  });
}

// Integer division with the CPU's error for a zero divisor: the kernel flags it in
// device memory and the host reads the flag back (one small synchronising copy).
template <typename T>
void integer_div(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int device = out.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const Tensor flag = Tensor::empty({1}, {DType::i32, out.device()});
  int* fp = static_cast<int*>(flag.data_ptr<void>());
  hmoe::cuda::memset_async(fp, 0, sizeof(int), stream);
  Map<T, T, T>::run(IntDivFn<T>{fp}, out, {&a, &b});
  int host = 0;
  hmoe::cuda::memcpy_async(&host, fp, sizeof host, hmoe::cuda::CopyKind::device_to_host, stream);
  stream.synchronize();
  HMOE_CHECK(host == 0, "div: integer division by zero");
}

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  HMOE_CHECK(a.dtype() == b.dtype(), "binary op: operand dtypes differ (", a.meta_str(), ", ", b.meta_str(), ")");
  if (a.dtype() == DType::b8) {
    if (op == BinaryOp::eq) return Map<bool, bool, bool>::run(BinaryFn<BinaryOp::eq, bool>{}, out, {&a, &b});
    if (op == BinaryOp::ne) return Map<bool, bool, bool>::run(BinaryFn<BinaryOp::ne, bool>{}, out, {&a, &b});
    hmoe::detail::unsupported_dtype("binary op", a.dtype());
  }
  dispatch_device_numeric(a.dtype(), "binary op", [&]<typename T>() {
    using C = device_compute_t<T>;
    with_binary_op(op, [&]<BinaryOp K>() {
      if constexpr (is_comparison(K)) {
        Map<bool, T, T>::run(Stored<bool, BinaryFn<K, C>>{}, out, {&a, &b});
      } else if constexpr (K == BinaryOp::div && std::is_integral_v<C>) {
        integer_div<T>(a, b, out);
      } else {
        Map<T, T, T>::run(Stored<T, BinaryFn<K, C>>{}, out, {&a, &b});
      }
    });
  });
}

template <typename W>
void where_bits(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  Map<W, bool, W, W>::run(SelectFn<W>{}, out, {&cond, &a, &b});
}

void where_cuda(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  HMOE_CHECK(cond.dtype() == DType::b8, "where: condition must be bool, got ", cond.meta_str());
  HMOE_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "where: dtypes differ (", a.meta_str(), ", ",
             b.meta_str(), ", ", out.meta_str(), ")");
  switch (out.element_size()) {
    case 1:
      return where_bits<uint8_t>(cond, a, b, out);
    case 2:
      return where_bits<uint16_t>(cond, a, b, out);
    case 4:
      return where_bits<uint32_t>(cond, a, b, out);
    default:
      return where_bits<uint64_t>(cond, a, b, out);
  }
}

}  // namespace

void register_elementwise_cuda() {
  unary_stub.set(DeviceType::cuda, &unary_cuda);
  unary_backward_stub.set(DeviceType::cuda, &unary_backward_cuda);
  binary_stub.set(DeviceType::cuda, &binary_cuda);
  where_stub.set(DeviceType::cuda, &where_cuda);
}

}  // namespace hmoe::ops::cuda
