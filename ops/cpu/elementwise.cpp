// CPU kernels of the elementwise family: strided loops with contiguous fast paths;
// half types compute in f32.
#include <cmath>

#include "ops/cpu/activation.h"
#include "ops/cpu/fast_math.h"
#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/elementwise_kernels.h"

namespace hmoe::ops::cpu {
namespace {

// Runs y = f(x) (types In -> Out) over a strided loop; contiguous runs vectorise.
template <typename In, typename Out, typename F>
void map1(const Tensor& in, const Tensor& out, F f) {
  make_loop(out.shape(), in, out).run([&](auto p, auto s, int64_t n) {
    const In* x = reinterpret_cast<const In*>(p[0]);
    Out* y = reinterpret_cast<Out*>(p[1]);
    if (s[0] == sizeof(In) && s[1] == sizeof(Out)) {
      for (int64_t i = 0; i < n; ++i) y[i] = Out(f(x[i]));
    } else {
      for (int64_t i = 0; i < n; ++i)
        *reinterpret_cast<Out*>(p[1] + i * s[1]) = Out(f(*reinterpret_cast<const In*>(p[0] + i * s[0])));
    }
  });
}

template <typename A, typename B, typename Out, typename F>
void map2(const Tensor& a, const Tensor& b, const Tensor& out, F f) {
  make_loop(out.shape(), a, b, out).run([&](auto p, auto s, int64_t n) {
    if (s[0] == sizeof(A) && s[1] == sizeof(B) && s[2] == sizeof(Out)) {
      const A* x = reinterpret_cast<const A*>(p[0]);
      const B* y = reinterpret_cast<const B*>(p[1]);
      Out* z = reinterpret_cast<Out*>(p[2]);
      for (int64_t i = 0; i < n; ++i) z[i] = Out(f(x[i], y[i]));
    } else if (s[0] == sizeof(A) && s[1] == 0 && s[2] == sizeof(Out)) {  // tensor op broadcast scalar
      const A* x = reinterpret_cast<const A*>(p[0]);
      const B y = *reinterpret_cast<const B*>(p[1]);
      Out* z = reinterpret_cast<Out*>(p[2]);
      for (int64_t i = 0; i < n; ++i) z[i] = Out(f(x[i], y));
    } else {
      for (int64_t i = 0; i < n; ++i)
        *reinterpret_cast<Out*>(p[2] + i * s[2]) =
            Out(f(*reinterpret_cast<const A*>(p[0] + i * s[0]), *reinterpret_cast<const B*>(p[1] + i * s[1])));
    }
  });
}

template <typename T>
T gelu_erf(T x) {
  return T(0.5) * x * (T(1) + erf_(x * T(0.70710678118654752440)));
}
template <typename T>
T gelu_tanh(T x) {
  const T k = T(0.7978845608028654), c = T(0.044715);
  return T(0.5) * x * (T(1) + std::tanh(k * (x + c * x * x * x)));
}
template <typename T>
T sigmoid_f(T x) {
  return T(1) / (T(1) + exp_(-x));
}
template <typename T>
T relu_f(T x) {
  return x > T(0) ? x : T(0);
}
template <typename T>
T silu_f(T x) {
  return x * sigmoid_f(x);
}
// Derivatives, as the backward kernels multiply them into the incoming gradient.
template <typename T>
T relu_df(T v) {
  return T(v > T(0));
}
template <typename T>
T gelu_erf_df(T v) {
  const T cdf = T(0.5) * (T(1) + erf_(v * T(0.70710678118654752440)));
  const T pdf = exp_(T(-0.5) * v * v) * T(0.39894228040143267794);
  return cdf + v * pdf;
}
template <typename T>
T gelu_tanh_df(T v) {
  const T k = T(0.7978845608028654), c = T(0.044715);
  const T t = std::tanh(k * (v + c * v * v * v));
  return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(3) * c * v * v);
}
template <typename T>
T silu_df(T v) {
  const T s = sigmoid_f(v);
  return s * (T(1) + v * (T(1) - s));
}
// The contiguous loops of the FFN activations, shared with the kernels that fuse them
// (activation.h): one compiled loop per activation, so a fused GEMM and the unary
// kernels give each element the same instructions. The output may be an input itself
// (no loop-carried dependence): told to the compiler, so that case is not sent to a
// scalar fallback loop.
#if defined(__clang__)
#define HMOE_INDEPENDENT_ITERATIONS _Pragma("clang loop vectorize(assume_safety)")
// A hint, not a demand: sanitizer builds cannot vectorize these loops, and clang would
// report that as an error under -Werror.
#pragma clang diagnostic ignored "-Wpass-failed"
#elif defined(__GNUC__)
#define HMOE_INDEPENDENT_ITERATIONS _Pragma("GCC ivdep")
#else
#define HMOE_INDEPENDENT_ITERATIONS
#endif
template <typename T, typename F>
void rows1(const T* x, T* y, int64_t n, F f) {
  HMOE_INDEPENDENT_ITERATIONS
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}
template <typename T, typename F>
void rows2(const T* x, const T* g, T* out, int64_t n, F df) {
  HMOE_INDEPENDENT_ITERATIONS
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] * df(x[i]);
}

template <typename T>
T softplus_f(T x, T beta, T threshold) {
  const T bx = beta * x;
  return bx > threshold ? x : std::log1p(std::exp(bx)) / beta;
}

// An FFN activation (or its gradient) over any strided tensor through its shared
// contiguous loop: contiguous runs directly, others via a small buffer, so every element
// gets that loop's instructions.
template <typename T>
void map_activation(ActivationRows<T> rows, const Tensor& in, const Tensor& out) {
  make_loop(out.shape(), in, out).run([&](auto p, auto s, int64_t n) {
    if (s[0] == sizeof(T) && s[1] == sizeof(T))
      return rows(reinterpret_cast<const T*>(p[0]), reinterpret_cast<T*>(p[1]), n);
    constexpr int64_t kBuf = 256;
    T buf[kBuf];
    for (int64_t i0 = 0; i0 < n; i0 += kBuf) {
      const int64_t nb = std::min(kBuf, n - i0);
      for (int64_t i = 0; i < nb; ++i) buf[i] = *reinterpret_cast<const T*>(p[0] + (i0 + i) * s[0]);
      rows(buf, buf, nb);
      for (int64_t i = 0; i < nb; ++i) *reinterpret_cast<T*>(p[1] + (i0 + i) * s[1]) = buf[i];
    }
  });
}
template <typename T>
void map_activation_grad(ActivationGradRows<T> rows, const Tensor& x, const Tensor& g, const Tensor& out) {
  make_loop(out.shape(), x, g, out).run([&](auto p, auto s, int64_t n) {
    if (s[0] == sizeof(T) && s[1] == sizeof(T) && s[2] == sizeof(T))
      return rows(reinterpret_cast<const T*>(p[0]), reinterpret_cast<const T*>(p[1]), reinterpret_cast<T*>(p[2]), n);
    constexpr int64_t kBuf = 256;
    T xb[kBuf], gb[kBuf];
    for (int64_t i0 = 0; i0 < n; i0 += kBuf) {
      const int64_t nb = std::min(kBuf, n - i0);
      for (int64_t i = 0; i < nb; ++i) {
        xb[i] = *reinterpret_cast<const T*>(p[0] + (i0 + i) * s[0]);
        gb[i] = *reinterpret_cast<const T*>(p[1] + (i0 + i) * s[1]);
      }
      rows(xb, gb, gb, nb);
      for (int64_t i = 0; i < nb; ++i) *reinterpret_cast<T*>(p[2] + (i0 + i) * s[2]) = gb[i];
    }
  });
}

template <typename scalar_t>
void unary_typed(UnaryOp op, const Tensor& in, const Tensor& out, double p0, double p1) {
  using C = compute_t<scalar_t>;
  using T = scalar_t;
  const C a = C(p0), b = C(p1);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
    if (const ActivationRows<T> rows = activation_rows<T>(op)) return map_activation(rows, in, out);
  switch (op) {
    case UnaryOp::neg: return map1<T, T>(in, out, [](C x) { return -x; });
    case UnaryOp::abs: return map1<T, T>(in, out, [](C x) { return x < C(0) ? C(-x) : x; });
    case UnaryOp::square: return map1<T, T>(in, out, [](C x) { return x * x; });
    case UnaryOp::sign: return map1<T, T>(in, out, [](C x) { return C((x > C(0)) - (x < C(0))); });
    case UnaryOp::mul_scalar: return map1<T, T>(in, out, [a](C x) { return x * a; });
    case UnaryOp::add_scalar: return map1<T, T>(in, out, [a](C x) { return x + a; });
    case UnaryOp::clamp: return map1<T, T>(in, out, [a, b](C x) { return x < a ? a : (x > b ? b : x); });
    case UnaryOp::relu: return map1<T, T>(in, out, [](C x) { return relu_f(x); });
    default: break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case UnaryOp::exp: return map1<T, T>(in, out, [](C x) { return exp_(x); });
      case UnaryOp::log: return map1<T, T>(in, out, [](C x) { return std::log(x); });
      case UnaryOp::sqrt: return map1<T, T>(in, out, [](C x) { return std::sqrt(x); });
      case UnaryOp::rsqrt: return map1<T, T>(in, out, [](C x) { return C(1) / std::sqrt(x); });
      case UnaryOp::gelu_erf: return map1<T, T>(in, out, [](C x) { return gelu_erf(x); });
      case UnaryOp::gelu_tanh: return map1<T, T>(in, out, [](C x) { return gelu_tanh(x); });
      case UnaryOp::silu: return map1<T, T>(in, out, [](C x) { return silu_f(x); });
      case UnaryOp::sigmoid: return map1<T, T>(in, out, [](C x) { return sigmoid_f(x); });
      case UnaryOp::tanh: return map1<T, T>(in, out, [](C x) { return std::tanh(x); });
      case UnaryOp::softplus: return map1<T, T>(in, out, [a, b](C x) { return softplus_f(x, a, b); });
      case UnaryOp::pow_scalar:
        if (p0 == 2.0) return map1<T, T>(in, out, [](C x) { return x * x; });
        return map1<T, T>(in, out, [a](C x) { return std::pow(x, a); });
      default: break;
    }
  }
  detail::unsupported_dtype("unary op", in.dtype());
}

void unary_cpu(UnaryOp op, const Tensor& in, const Tensor& out, double p0, double p1) {
  if (op == UnaryOp::logical_not) return map1<bool, bool>(in, out, [](bool x) { return !x; });
  detail::dispatch_numeric(in.dtype(), "unary op", [&]<typename T>() { unary_typed<T>(op, in, out, p0, p1); });
}

template <typename scalar_t>
void unary_backward_typed(UnaryOp op, const Tensor& x, const Tensor& g, const Tensor& gi, double p0, double p1) {
  using C = compute_t<scalar_t>;
  using T = scalar_t;
  const C a = C(p0), b = C(p1);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
    if (const ActivationGradRows<T> rows = activation_grad_rows<T>(op)) return map_activation_grad(rows, x, g, gi);
  auto run = [&](auto df) { map2<T, T, T>(x, g, gi, [df](C xv, C gv) { return gv * df(xv); }); };
  switch (op) {
    case UnaryOp::relu: return run([](C v) { return relu_df(v); });
    case UnaryOp::clamp: return run([a, b](C v) { return C(v >= a && v <= b); });
    case UnaryOp::gelu_erf: return run([](C v) { return gelu_erf_df(v); });
    case UnaryOp::gelu_tanh: return run([](C v) { return gelu_tanh_df(v); });
    case UnaryOp::silu: return run([](C v) { return silu_df(v); });
    case UnaryOp::sigmoid:
      return run([](C v) {
        const C s = sigmoid_f(v);
        return s * (C(1) - s);
      });
    case UnaryOp::tanh:
      return run([](C v) {
        const C t = std::tanh(v);
        return C(1) - t * t;
      });
    case UnaryOp::softplus: return run([a, b](C v) { return a * v > b ? C(1) : sigmoid_f(a * v); });
    default: detail::unsupported_dtype("unary backward", x.dtype());
  }
}

void unary_backward_cpu(UnaryOp op, const Tensor& x, const Tensor& g, const Tensor& gi, double p0, double p1) {
  detail::dispatch_float(x.dtype(), "unary backward",
                         [&]<typename T>() { unary_backward_typed<T>(op, x, g, gi, p0, p1); });
}

template <typename T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  using C = compute_t<T>;
  switch (op) {
    case BinaryOp::add: return map2<T, T, T>(a, b, out, [](C x, C y) { return x + y; });
    case BinaryOp::sub: return map2<T, T, T>(a, b, out, [](C x, C y) { return x - y; });
    case BinaryOp::mul: return map2<T, T, T>(a, b, out, [](C x, C y) { return x * y; });
    case BinaryOp::div:
      if constexpr (std::is_integral_v<C>) {
        // Integer division by zero is an error, not undefined behaviour.
        return map2<T, T, T>(a, b, out, [](C x, C y) {
          HMOE_CHECK(y != 0, "div: integer division by zero");
          return x / y;
        });
      } else {
        return map2<T, T, T>(a, b, out, [](C x, C y) { return x / y; });
      }
    case BinaryOp::maximum:
      return map2<T, T, T>(a, b, out, [](C x, C y) { return (x != x || x > y) ? x : y; });  // NaN propagates
    case BinaryOp::minimum: return map2<T, T, T>(a, b, out, [](C x, C y) { return (x != x || x < y) ? x : y; });
    case BinaryOp::eq: return map2<T, T, bool>(a, b, out, [](C x, C y) { return x == y; });
    case BinaryOp::ne: return map2<T, T, bool>(a, b, out, [](C x, C y) { return x != y; });
    case BinaryOp::lt: return map2<T, T, bool>(a, b, out, [](C x, C y) { return x < y; });
    case BinaryOp::le: return map2<T, T, bool>(a, b, out, [](C x, C y) { return x <= y; });
    case BinaryOp::gt: return map2<T, T, bool>(a, b, out, [](C x, C y) { return x > y; });
    case BinaryOp::ge: return map2<T, T, bool>(a, b, out, [](C x, C y) { return x >= y; });
  }
}

void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  detail::dispatch_all(a.dtype(), "binary op", [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool>) {
      switch (op) {
        case BinaryOp::eq: return map2<bool, bool, bool>(a, b, out, [](bool x, bool y) { return x == y; });
        case BinaryOp::ne: return map2<bool, bool, bool>(a, b, out, [](bool x, bool y) { return x != y; });
        default: detail::unsupported_dtype("binary op", a.dtype());
      }
    } else {
      binary_typed<T>(op, a, b, out);
    }
  });
}

void where_cpu(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  detail::dispatch_all(a.dtype(), "where", [&]<typename T>() {
    make_loop(out.shape(), cond, a, b, out).run([&](auto p, auto s, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const bool c = *reinterpret_cast<const bool*>(p[0] + i * s[0]);
        *reinterpret_cast<T*>(p[3] + i * s[3]) = *reinterpret_cast<const T*>(p[c ? 1 : 2] + i * s[c ? 1 : 2]);
      }
    });
  });
}

}  // namespace

bool is_ffn_activation(UnaryOp op) {
  return op == UnaryOp::relu || op == UnaryOp::gelu_erf || op == UnaryOp::gelu_tanh || op == UnaryOp::silu;
}

template <typename T>
ActivationRows<T> activation_rows(UnaryOp op) {
  switch (op) {
    case UnaryOp::relu: return [](const T* x, T* y, int64_t n) { rows1(x, y, n, [](T v) { return relu_f(v); }); };
    case UnaryOp::gelu_erf:
      return [](const T* x, T* y, int64_t n) { rows1(x, y, n, [](T v) { return gelu_erf(v); }); };
    case UnaryOp::gelu_tanh:
      return [](const T* x, T* y, int64_t n) { rows1(x, y, n, [](T v) { return gelu_tanh(v); }); };
    case UnaryOp::silu: return [](const T* x, T* y, int64_t n) { rows1(x, y, n, [](T v) { return silu_f(v); }); };
    default: return nullptr;
  }
}

template <typename T>
ActivationGradRows<T> activation_grad_rows(UnaryOp op) {
  switch (op) {
    case UnaryOp::relu:
      return [](const T* x, const T* g, T* o, int64_t n) { rows2(x, g, o, n, [](T v) { return relu_df(v); }); };
    case UnaryOp::gelu_erf:
      return [](const T* x, const T* g, T* o, int64_t n) { rows2(x, g, o, n, [](T v) { return gelu_erf_df(v); }); };
    case UnaryOp::gelu_tanh:
      return [](const T* x, const T* g, T* o, int64_t n) { rows2(x, g, o, n, [](T v) { return gelu_tanh_df(v); }); };
    case UnaryOp::silu:
      return [](const T* x, const T* g, T* o, int64_t n) { rows2(x, g, o, n, [](T v) { return silu_df(v); }); };
    default: return nullptr;
  }
}

template ActivationRows<float> activation_rows<float>(UnaryOp);
template ActivationRows<double> activation_rows<double>(UnaryOp);
template ActivationGradRows<float> activation_grad_rows<float>(UnaryOp);
template ActivationGradRows<double> activation_grad_rows<double>(UnaryOp);

void register_elementwise_cpu() {
  unary_stub.set(DeviceType::cpu, &unary_cpu);
  unary_backward_stub.set(DeviceType::cpu, &unary_backward_cpu);
  binary_stub.set(DeviceType::cpu, &binary_cpu);
  where_stub.set(DeviceType::cpu, &where_cpu);
}

}  // namespace hmoe::ops::cpu
