// CPU kernels of the elementwise family: strided loops with contiguous fast paths;
// half types compute in f32.
#include <cmath>

#include "ops/cpu/fast_math.h"
#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"

namespace hmoe {
HMOE_DECLARE_STUB(UnaryKernel, unary_stub);
HMOE_DECLARE_STUB(UnaryBackwardKernel, unary_backward_stub);
HMOE_DECLARE_STUB(BinaryKernel, binary_stub);
HMOE_DECLARE_STUB(WhereKernel, where_stub);
}  // namespace hmoe

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
T softplus_f(T x, T beta, T threshold) {
  const T bx = beta * x;
  return bx > threshold ? x : std::log1p(std::exp(bx)) / beta;
}

template <typename scalar_t>
void unary_typed(UnaryOp op, const Tensor& in, const Tensor& out, double p0, double p1) {
  using C = compute_t<scalar_t>;
  using T = scalar_t;
  const C a = C(p0), b = C(p1);
  switch (op) {
    case UnaryOp::neg: return map1<T, T>(in, out, [](C x) { return -x; });
    case UnaryOp::abs: return map1<T, T>(in, out, [](C x) { return x < C(0) ? C(-x) : x; });
    case UnaryOp::square: return map1<T, T>(in, out, [](C x) { return x * x; });
    case UnaryOp::sign: return map1<T, T>(in, out, [](C x) { return C((x > C(0)) - (x < C(0))); });
    case UnaryOp::mul_scalar: return map1<T, T>(in, out, [a](C x) { return x * a; });
    case UnaryOp::add_scalar: return map1<T, T>(in, out, [a](C x) { return x + a; });
    case UnaryOp::clamp: return map1<T, T>(in, out, [a, b](C x) { return x < a ? a : (x > b ? b : x); });
    case UnaryOp::relu: return map1<T, T>(in, out, [](C x) { return x > C(0) ? x : C(0); });
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
      case UnaryOp::silu: return map1<T, T>(in, out, [](C x) { return x * sigmoid_f(x); });
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
  auto run = [&](auto df) { map2<T, T, T>(x, g, gi, [df](C xv, C gv) { return gv * df(xv); }); };
  switch (op) {
    case UnaryOp::relu: return run([](C v) { return C(v > C(0)); });
    case UnaryOp::clamp: return run([a, b](C v) { return C(v >= a && v <= b); });
    case UnaryOp::gelu_erf:
      return run([](C v) {
        const C cdf = C(0.5) * (C(1) + erf_(v * C(0.70710678118654752440)));
        const C pdf = exp_(C(-0.5) * v * v) * C(0.39894228040143267794);
        return cdf + v * pdf;
      });
    case UnaryOp::gelu_tanh:
      return run([](C v) {
        const C k = C(0.7978845608028654), c = C(0.044715);
        const C t = std::tanh(k * (v + c * v * v * v));
        return C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * k * (C(1) + C(3) * c * v * v);
      });
    case UnaryOp::silu:
      return run([](C v) {
        const C s = sigmoid_f(v);
        return s * (C(1) + v * (C(1) - s));
      });
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

void register_elementwise_cpu() {
  unary_stub.set(DeviceType::cpu, &unary_cpu);
  unary_backward_stub.set(DeviceType::cpu, &unary_backward_cpu);
  binary_stub.set(DeviceType::cpu, &binary_cpu);
  where_stub.set(DeviceType::cpu, &where_cpu);
}

}  // namespace hmoe::ops::cpu
