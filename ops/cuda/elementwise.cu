// The elementwise kernel family on the cuda device (contract: ops/elementwise.h,
// reference: ops/cpu/elementwise.cpp): unary ops and their backward, binary ops with
// broadcasting (inputs arrive expanded, possibly with stride-0 dims), comparisons into
// bool, and where. One kernel per (family, dtype) with the op chosen by a uniform
// switch; a dense path (all operands contiguous, 16-byte vector loads when aligned) and
// a strided path (coalesced layout, rank <= 8). Math in f32 for half types, f64 for f64.
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "ops/cuda/strided.cuh"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"

namespace hmoe {
HMOE_DECLARE_STUB(UnaryKernel, unary_stub);
HMOE_DECLARE_STUB(UnaryBackwardKernel, unary_backward_stub);
HMOE_DECLARE_STUB(BinaryKernel, binary_stub);
HMOE_DECLARE_STUB(WhereKernel, where_stub);
}  // namespace hmoe

namespace hmoe::ops::cuda {
namespace {

constexpr int kThreads = 256;

// --- device math in the compute type (float or double; integers for the integer ops) ---
template <typename C>
__device__ __forceinline__ C d_exp(C x) {
  if constexpr (std::is_same_v<C, float>) return expf(x);
  else return ::exp(x);
}
template <typename C>
__device__ __forceinline__ C d_log(C x) {
  if constexpr (std::is_same_v<C, float>) return logf(x);
  else return ::log(x);
}
template <typename C>
__device__ __forceinline__ C d_sqrt(C x) {
  if constexpr (std::is_same_v<C, float>) return sqrtf(x);
  else return ::sqrt(x);
}
template <typename C>
__device__ __forceinline__ C d_erf(C x) {
  if constexpr (std::is_same_v<C, float>) return erff(x);
  else return ::erf(x);
}
template <typename C>
__device__ __forceinline__ C d_tanh(C x) {
  if constexpr (std::is_same_v<C, float>) return tanhf(x);
  else return ::tanh(x);
}
template <typename C>
__device__ __forceinline__ C d_log1p(C x) {
  if constexpr (std::is_same_v<C, float>) return log1pf(x);
  else return ::log1p(x);
}
template <typename C>
__device__ __forceinline__ C d_pow(C x, C y) {
  if constexpr (std::is_same_v<C, float>) return powf(x, y);
  else return ::pow(x, y);
}
template <typename C>
__device__ __forceinline__ C d_sigmoid(C x) {
  return C(1) / (C(1) + d_exp(-x));
}

// y = op(x) for every UnaryOp (the float-only ones are not reached for integers: the
// host refuses them first, as the CPU does).
template <typename C>
__device__ __forceinline__ C unary_value(UnaryOp op, C x, C a, C b) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::abs: return x < C(0) ? C(-x) : x;
    case UnaryOp::square: return x * x;
    case UnaryOp::sign: return C((x > C(0)) - (x < C(0)));
    case UnaryOp::mul_scalar: return x * a;
    case UnaryOp::add_scalar: return x + a;
    case UnaryOp::clamp: return x < a ? a : (x > b ? b : x);
    case UnaryOp::relu: return x > C(0) ? x : C(0);
    default: break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case UnaryOp::exp: return d_exp(x);
      case UnaryOp::log: return d_log(x);
      case UnaryOp::sqrt: return d_sqrt(x);
      case UnaryOp::rsqrt: return C(1) / d_sqrt(x);
      case UnaryOp::gelu_erf: return C(0.5) * x * (C(1) + d_erf(x * C(0.70710678118654752440)));
      case UnaryOp::gelu_tanh: {
        const C k = C(0.7978845608028654), c = C(0.044715);
        return C(0.5) * x * (C(1) + d_tanh(k * (x + c * x * x * x)));
      }
      case UnaryOp::silu: return x * d_sigmoid(x);
      case UnaryOp::sigmoid: return d_sigmoid(x);
      case UnaryOp::tanh: return d_tanh(x);
      case UnaryOp::softplus: {
        const C bx = a * x;
        return bx > b ? x : d_log1p(d_exp(bx)) / a;
      }
      case UnaryOp::pow_scalar: return a == C(2) ? x * x : d_pow(x, a);
      default: break;
    }
  }
  return x;
}

// f'(x) of the differentiable unary ops (grad_in = grad_out * f'(x)).
template <typename C>
__device__ __forceinline__ C unary_derivative(UnaryOp op, C v, C a, C b) {
  switch (op) {
    case UnaryOp::relu: return C(v > C(0));
    case UnaryOp::clamp: return C(v >= a && v <= b);
    case UnaryOp::gelu_erf: {
      const C cdf = C(0.5) * (C(1) + d_erf(v * C(0.70710678118654752440)));
      const C pdf = d_exp(C(-0.5) * v * v) * C(0.39894228040143267794);
      return cdf + v * pdf;
    }
    case UnaryOp::gelu_tanh: {
      const C k = C(0.7978845608028654), c = C(0.044715);
      const C t = d_tanh(k * (v + c * v * v * v));
      return C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * k * (C(1) + C(3) * c * v * v);
    }
    case UnaryOp::silu: {
      const C s = d_sigmoid(v);
      return s * (C(1) + v * (C(1) - s));
    }
    case UnaryOp::sigmoid: {
      const C s = d_sigmoid(v);
      return s * (C(1) - s);
    }
    case UnaryOp::tanh: {
      const C t = d_tanh(v);
      return C(1) - t * t;
    }
    case UnaryOp::softplus: return a * v > b ? C(1) : d_sigmoid(a * v);
    default: return C(0);
  }
}

// Arithmetic binary ops in the compute type; int_div_zero flags an integer x / 0.
template <typename C>
__device__ __forceinline__ C binary_value(BinaryOp op, C x, C y, int* int_div_zero) {
  switch (op) {
    case BinaryOp::add: return x + y;
    case BinaryOp::sub: return x - y;
    case BinaryOp::mul: return x * y;
    case BinaryOp::div:
      if constexpr (std::is_integral_v<C>) {
        if (y == C(0)) {
          atomicExch(int_div_zero, 1);
          return C(0);
        }
      }
      return x / y;
    case BinaryOp::maximum: return (x != x || x > y) ? x : y;  // NaN propagates
    case BinaryOp::minimum: return (x != x || x < y) ? x : y;
    default: return x;
  }
}
template <typename C>
__device__ __forceinline__ bool compare_value(BinaryOp op, C x, C y) {
  switch (op) {
    case BinaryOp::eq: return x == y;
    case BinaryOp::ne: return x != y;
    case BinaryOp::lt: return x < y;
    case BinaryOp::le: return x <= y;
    case BinaryOp::gt: return x > y;
    case BinaryOp::ge: return x >= y;
    default: return false;
  }
}

// Loads and stores in the compute type: half types through float, bool and integers as is.
template <typename T>
using calc_t = std::conditional_t<std::is_same_v<T, bool>, bool, device_compute_t<T>>;
template <typename T>
__device__ __forceinline__ calc_t<T> ld(const T* p) {
  if constexpr (std::is_same_v<T, bool>) return *p;
  else return to_compute<T>(*p);
}
template <typename T>
__device__ __forceinline__ void st(T* p, calc_t<T> v) {
  if constexpr (std::is_same_v<T, bool>) *p = v;
  else *p = from_compute<T>(v);
}

// Elements per 16-byte vector of T.
template <typename T>
constexpr int kVec = int(16 / sizeof(T));

// One generic elementwise kernel: out[i] = f(in0[i], ..., in_{N-2}[i]) for N operands
// (the last is the output). Dense: each thread handles kVec<Out> consecutive elements,
// loaded as 16-byte vectors when every pointer is 16-byte aligned (checked on the host,
// `vec`), the tail element by element; strided: offsets from the coalesced layout.
// Launch: 1-d grid of 256-thread blocks, grid-stride.
template <int N, typename Out, typename In, typename F>
__global__ void map_kernel(F f, const In* __restrict__ in0, const In* __restrict__ in1, const void* __restrict__ in2,
                           Out* __restrict__ out, StridedLayout<N> layout, bool dense, bool vec, int64_t n) {
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  if (dense) {
    constexpr int V = kVec<In> < kVec<Out> ? kVec<In> : kVec<Out>;
    const int64_t nvec = vec ? n / V : 0;
    for (int64_t j = tid; j < nvec; j += step) {
      const int64_t base = j * V;
      calc_t<In> x0[V] = {}, x1[V] = {};
      if constexpr (N >= 2) {
        struct alignas(16) Pack {
          In v[V];
        };
        const Pack p0 = *reinterpret_cast<const Pack*>(in0 + base);
#pragma unroll
        for (int e = 0; e < V; ++e) x0[e] = ld(&p0.v[e]);
      }
      if constexpr (N >= 3) {
        struct alignas(16) Pack {
          In v[V];
        };
        const Pack p1 = *reinterpret_cast<const Pack*>(in1 + base);
#pragma unroll
        for (int e = 0; e < V; ++e) x1[e] = ld(&p1.v[e]);
      }
#pragma unroll
      for (int e = 0; e < V; ++e) st(out + base + e, f(x0[e], x1[e], base + e, in2));
    }
    for (int64_t i = nvec * V + tid; i < n; i += step) {
      const calc_t<In> a = N >= 2 ? ld(in0 + i) : calc_t<In>(), b = N >= 3 ? ld(in1 + i) : calc_t<In>();
      st(out + i, f(a, b, i, in2));
    }
    return;
  }
  for (int64_t i = tid; i < n; i += step) {
    int64_t off[N];
    layout.offsets(i, off);
    const calc_t<In> a = N >= 2 ? ld(in0 + off[0]) : calc_t<In>();
    const calc_t<In> b = N >= 3 ? ld(in1 + off[N >= 3 ? 1 : 0]) : calc_t<In>();
    st(out + off[N - 1], f(a, b, off[0], in2));
  }
}

// The functors (device-callable, passed by value). Unused arguments keep one signature.
template <typename C>
struct UnaryF {
  UnaryOp op;
  C a, b;
  __device__ C operator()(C x, C, int64_t, const void*) const { return unary_value(op, x, a, b); }
};
template <typename C>
struct UnaryBackwardF {
  UnaryOp op;
  C a, b;
  __device__ C operator()(C x, C g, int64_t, const void*) const { return g * unary_derivative(op, x, a, b); }
};
template <typename C>
struct BinaryF {
  BinaryOp op;
  int* flag;
  __device__ C operator()(C x, C y, int64_t, const void*) const { return binary_value(op, x, y, flag); }
};
template <typename C>
struct CompareF {
  BinaryOp op;
  __device__ bool operator()(C x, C y, int64_t, const void*) const { return compare_value(op, x, y); }
};
struct NotF {
  __device__ bool operator()(bool x, bool, int64_t, const void*) const { return !x; }
};

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Launches map_kernel over out's shape for 1 or 2 inputs (all expanded to out's shape).
template <typename Out, typename In, typename F>
void launch_map(const char* what, F f, const Tensor& out, const Tensor& a, const Tensor* b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int device = out.device().index;
  const unsigned blocks = flat_blocks(n, device, kThreads);
  void* stream = hmoe::cuda::current_stream(device).native();
  (void)what;
  if (b) {
    const StridedLayout<3> L = make_layout<3>(out.shape(), {&a.strides(), &b->strides(), &out.strides()});
    const bool dense = is_dense(L);
    const bool vec = aligned16(a.data_ptr<void>()) && aligned16(b->data_ptr<void>()) && aligned16(out.data_ptr<void>());
    auto k = &map_kernel<3, Out, In, F>;
    HMOE_LAUNCH_CHECKED(k, blocks, kThreads, 0, stream, f, static_cast<const In*>(a.data_ptr<void>()),
                        static_cast<const In*>(b->data_ptr<void>()), static_cast<const void*>(nullptr),
                        static_cast<Out*>(out.data_ptr<void>()), L, dense, vec, n);
  } else {
    const StridedLayout<2> L = make_layout<2>(out.shape(), {&a.strides(), &out.strides()});
    const bool dense = is_dense(L);
    const bool vec = aligned16(a.data_ptr<void>()) && aligned16(out.data_ptr<void>());
    auto k = &map_kernel<2, Out, In, F>;
    HMOE_LAUNCH_CHECKED(k, blocks, kThreads, 0, stream, f, static_cast<const In*>(a.data_ptr<void>()),
                        static_cast<const In*>(nullptr), static_cast<const void*>(nullptr),
                        static_cast<Out*>(out.data_ptr<void>()), L, dense, vec, n);
  }
}

bool float_only(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg:
    case UnaryOp::abs:
    case UnaryOp::square:
    case UnaryOp::sign:
    case UnaryOp::mul_scalar:
    case UnaryOp::add_scalar:
    case UnaryOp::clamp:
    case UnaryOp::relu:
    case UnaryOp::logical_not: return false;
    default: return true;
  }
}

// fn.template operator()<T>() for the numeric kernel-side types (no bool).
template <typename Fn>
void dispatch_numeric_device(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::bf16: return fn.template operator()<__nv_bfloat16>();
    case DType::f16: return fn.template operator()<__half>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    default: detail::unsupported_dtype(op, dt);
  }
}

void unary_cuda(UnaryOp op, const Tensor& in, const Tensor& out, double p0, double p1) {
  if (op == UnaryOp::logical_not) {
    HMOE_CHECK(in.dtype() == DType::b8, "logical_not: needs a bool tensor, got ", in.meta_str());
    return launch_map<bool, bool>("logical_not", NotF{}, out, in, nullptr);
  }
  if (float_only(op) && !is_floating(in.dtype())) detail::unsupported_dtype("unary op", in.dtype());
  dispatch_numeric_device(in.dtype(), "unary op", [&]<typename T>() {
    using C = calc_t<T>;
    launch_map<T, T>("unary", UnaryF<C>{op, C(p0), C(p1)}, out, in, nullptr);
  });
}

void unary_backward_cuda(UnaryOp op, const Tensor& x, const Tensor& g, const Tensor& gi, double p0, double p1) {
  if (!is_floating(x.dtype())) detail::unsupported_dtype("unary backward", x.dtype());
  dispatch_numeric_device(x.dtype(), "unary backward", [&]<typename T>() {
    using C = calc_t<T>;
    if constexpr (std::is_floating_point_v<C>) launch_map<T, T>("unary_backward", UnaryBackwardF<C>{op, C(p0), C(p1)}, gi, x, &g);
  });
}

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const bool compare = op >= BinaryOp::eq;
  if (a.dtype() == DType::b8) {
    HMOE_CHECK(op == BinaryOp::eq || op == BinaryOp::ne, "binary op: bool tensors support only eq and ne, got ",
               a.meta_str());
    return launch_map<bool, bool>("compare", CompareF<bool>{op}, out, a, &b);
  }
  dispatch_numeric_device(a.dtype(), "binary op", [&]<typename T>() {
    using C = calc_t<T>;
    if (compare) return launch_map<bool, T>("compare", CompareF<C>{op}, out, a, &b);
    if constexpr (std::is_integral_v<C>) {
      if (op == BinaryOp::div) {
        // Integer division by zero is an error (as on the CPU): flagged on the device.
        const int device = out.device().index;
        Tensor flag = zeros({1}, {DType::i32, out.device()});
        launch_map<T, T>("binary", BinaryF<C>{op, flag.data_ptr<int32_t>()}, out, a, &b);
        int32_t host = 0;
        hmoe::cuda::memcpy_async(&host, flag.data_ptr<int32_t>(), sizeof host, hmoe::cuda::CopyKind::device_to_host,
                                 hmoe::cuda::current_stream(device));
        hmoe::cuda::current_stream(device).synchronize();
        HMOE_CHECK(host == 0, "div: integer division by zero");
        return;
      }
    }
    launch_map<T, T>("binary", BinaryF<C>{op, nullptr}, out, a, &b);
  });
}

// out[i] = cond[i] ? a[i] : b[i]: moves element bits (W = unsigned of the element width).
template <typename W>
__global__ void where_kernel(const bool* __restrict__ cond, const W* __restrict__ a, const W* __restrict__ b,
                             W* __restrict__ out, StridedLayout<4> layout, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[4];
    layout.offsets(i, off);
    out[off[3]] = cond[off[0]] ? a[off[1]] : b[off[2]];
  }
}

template <typename W>
void launch_where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int device = out.device().index;
  const StridedLayout<4> L =
      make_layout<4>(out.shape(), {&cond.strides(), &a.strides(), &b.strides(), &out.strides()});
  auto k = &where_kernel<W>;
  HMOE_LAUNCH_CHECKED(k, flat_blocks(n, device, kThreads), kThreads, 0, hmoe::cuda::current_stream(device).native(),
                      cond.data_ptr<bool>(), static_cast<const W*>(a.data_ptr<void>()),
                      static_cast<const W*>(b.data_ptr<void>()), static_cast<W*>(out.data_ptr<void>()), L, n);
}

void where_cuda(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  HMOE_CHECK(cond.dtype() == DType::b8, "where: condition must be bool, got ", cond.meta_str());
  switch (dtype_size(a.dtype())) {
    case 1: return launch_where<uint8_t>(cond, a, b, out);
    case 2: return launch_where<uint16_t>(cond, a, b, out);
    case 4: return launch_where<uint32_t>(cond, a, b, out);
    default: return launch_where<uint64_t>(cond, a, b, out);
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
