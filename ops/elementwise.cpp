// Elementwise ops: shape and dtype rules, dispatch, and each op's backward.
#include "ops/elementwise.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/elementwise_kernels.h"
#include "ops/factory.h"

namespace hmoe {

namespace {
// Cost models (ops/dispatch.h): elementwise kernels are bound by their bytes.
KernelWork unary_work(UnaryOp, const Tensor& in, const Tensor& out, double, double) {
  return {0.0, ops::distinct_bytes(in) + ops::distinct_bytes(out)};
}
KernelWork unary_backward_work(UnaryOp, const Tensor& x, const Tensor& grad_out, const Tensor& grad_in, double,
                               double) {
  return {double(grad_in.numel()),
          ops::distinct_bytes(x) + ops::distinct_bytes(grad_out) + ops::distinct_bytes(grad_in)};
}
KernelWork binary_work(BinaryOp, const Tensor& a, const Tensor& b, const Tensor& out) {
  return {double(out.numel()), ops::distinct_bytes(a) + ops::distinct_bytes(b) + ops::distinct_bytes(out)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(UnaryKernel, unary_stub, &unary_work);
HMOE_DEFINE_STUB_WITH_WORK(UnaryBackwardKernel, unary_backward_stub, &unary_backward_work);
HMOE_DEFINE_STUB_WITH_WORK(BinaryKernel, binary_stub, &binary_work);
HMOE_DEFINE_STUB(WhereKernel, where_stub);

using autograd::record;

namespace {

bool is_comparison(BinaryOp op) { return op >= BinaryOp::eq; }

const char* binary_name(BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
  return names[size_t(op)];
}

const char* unary_name(UnaryOp op) {
  static const char* names[] = {"neg",     "exp",  "log",      "sqrt",       "rsqrt",      "abs",    "relu",
                                "gelu",    "gelu", "silu",     "sigmoid",    "tanh",       "softplus", "pow",
                                "clamp",   "mul",  "add",      "sign",       "logical_not", "square"};
  return names[size_t(op)];
}

Tensor run_binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  const Device dev = ops::common_device(name, {&a, &b});
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  const DType ct = promote(a.dtype(), b.dtype());
  HMOE_CHECK(is_comparison(op) || ct != DType::b8, name, ": arithmetic on bool tensors is not supported (",
             a.meta_str(), ", ", b.meta_str(), ")");
  const Tensor ac = (a.dtype() == ct ? a : a.to(ct)).expand(shape);
  const Tensor bc = (b.dtype() == ct ? b : b.to(ct)).expand(shape);
  Tensor out = Tensor::empty(shape, {is_comparison(op) ? DType::b8 : ct, dev});
  binary_stub.get(dev, name)(op, ac.detach(), bc.detach(), out);
  return out;
}

Tensor run_unary(UnaryOp op, const Tensor& a, double p0 = 0, double p1 = 0) {
  Tensor out = Tensor::empty(a.shape(), {op == UnaryOp::logical_not ? DType::b8 : a.dtype(), a.device()});
  unary_stub.get(a.device(), unary_name(op))(op, a.detach(), out, p0, p1);
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& g, double p0 = 0, double p1 = 0) {
  Tensor gi = Tensor::empty(x.shape(), {x.dtype(), x.device()});
  unary_backward_stub.get(x.device())(op, x, g.contiguous(), gi, p0, p1);
  return gi;
}

void require_float(const char* op, const Tensor& a) {
  HMOE_CHECK(is_floating(a.dtype()), op, ": needs a floating-point tensor, got ", a.meta_str());
}

// Unary op whose backward is a fused kernel on x.
Tensor fused_activation(UnaryOp op, const Tensor& a, double p0 = 0, double p1 = 0) {
  require_float(unary_name(op), a);
  Tensor out = run_unary(op, a, p0, p1);
  record(unary_name(op), {a}, {out}, [x = a.detach(), op, p0, p1](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{unary_backward(op, x, g[0], p0, p1)};
  });
  return out;
}

}  // namespace

void add_(const Tensor& dst, const Tensor& src) {
  NoGradGuard ng;
  const Device dev = ops::common_device("add_", {&dst, &src});
  HMOE_CHECK(dst.dtype() != DType::b8, "add_: arithmetic on bool tensors is not supported (", dst.meta_str(), ")");
  HMOE_CHECK(broadcast_shapes(dst.shape(), src.shape(), "add_") == dst.shape(), "add_: ", src.meta_str(),
             " does not broadcast to the destination ", dst.meta_str());
  if (!dst.is_contiguous()) {
    Tensor d = dst;
    d.copy_(add(dst, src));
    return;
  }
  const Tensor s = (src.dtype() == dst.dtype() ? src : src.to(dst.dtype())).expand(dst.shape());
  binary_stub.get(dev, "add_")(BinaryOp::add, dst.detach(), s.detach(), dst.detach());
  dst.storage()->bump_version();
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::add, a, b);
  record("add", {a, b}, {out}, [sa = a.shape(), sb = b.shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(g[0], sb)};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::sub, a, b);
  record("sub", {a, b}, {out}, [sa = a.shape(), sb = b.shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(neg(g[0]), sb)};
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::mul, a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  record("mul", {a, b}, {out},
         [sa = gb ? a.detach() : Tensor(), sb = ga ? b.detach() : Tensor(), ga, gb, sha = a.shape(),
          shb = b.shape()](const std::vector<Tensor>& g) {
           return std::vector<Tensor>{ga ? sum_to(mul(g[0], sb), sha) : Tensor(),
                                      gb ? sum_to(mul(g[0], sa), shb) : Tensor()};
         });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::div, a, b);
  const bool gb = b.requires_grad();
  record("div", {a, b}, {out},
         [sb = b.detach(), so = gb ? out.detach() : Tensor(), gb, sha = a.shape(),
          shb = b.shape()](const std::vector<Tensor>& g) {
           Tensor ga = div(g[0], sb);
           return std::vector<Tensor>{sum_to(ga, sha), gb ? sum_to(neg(mul(ga, so)), shb) : Tensor()};
         });
  return out;
}

namespace {
Tensor min_max(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(op, a, b);
  record(binary_name(op), {a, b}, {out},
         [sa = a.detach(), sb = b.detach(), op](const std::vector<Tensor>& g) {
           // The winner takes the gradient; exact ties split it in half.
           const Tensor win_a = op == BinaryOp::maximum ? gt(sa, sb) : lt(sa, sb);
           const Tensor tie = eq(sa, sb);
           const Tensor half = mul(g[0], 0.5);
           const Tensor zero = zeros_like(g[0]);
           const Tensor g_a = where(win_a, g[0], where(tie, half, zero));
           const Tensor g_b = where(win_a, zero, where(tie, half, g[0]));
           return std::vector<Tensor>{sum_to(g_a, sa.shape()), sum_to(g_b, sb.shape())};
         });
  return out;
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return min_max(BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return min_max(BinaryOp::minimum, a, b); }

Tensor add(const Tensor& a, double s) {
  if (!is_floating(a.dtype()) && std::floor(s) != s) return add(a, scalar_like(s, a));
  Tensor out = run_unary(UnaryOp::add_scalar, a, s);
  record("add", {a}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
  return out;
}

Tensor mul(const Tensor& a, double s) {
  if (!is_floating(a.dtype()) && std::floor(s) != s) return mul(a, scalar_like(s, a));
  Tensor out = run_unary(UnaryOp::mul_scalar, a, s);
  record("mul", {a}, {out}, [s](const std::vector<Tensor>& g) { return std::vector<Tensor>{mul(g[0], s)}; });
  return out;
}

Tensor pow(const Tensor& a, double p) {
  require_float("pow", a);
  Tensor out = run_unary(UnaryOp::pow_scalar, a, p);
  record("pow", {a}, {out}, [x = a.detach(), p](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{mul(mul(g[0], pow(x, p - 1)), p)};
  });
  return out;
}

Tensor neg(const Tensor& a) {
  HMOE_CHECK(a.dtype() != DType::b8, "neg: not defined for bool tensors");
  Tensor out = run_unary(UnaryOp::neg, a);
  record("neg", {a}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{neg(g[0])}; });
  return out;
}

Tensor exp(const Tensor& a) {
  require_float("exp", a);
  Tensor out = run_unary(UnaryOp::exp, a);
  record("exp", {a}, {out}, [y = out.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{mul(g[0], y)};
  });
  return out;
}

Tensor log(const Tensor& a) {
  require_float("log", a);
  Tensor out = run_unary(UnaryOp::log, a);
  record("log", {a}, {out}, [x = a.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{div(g[0], x)};
  });
  return out;
}

Tensor sqrt(const Tensor& a) {
  require_float("sqrt", a);
  Tensor out = run_unary(UnaryOp::sqrt, a);
  record("sqrt", {a}, {out}, [y = out.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{div(mul(g[0], 0.5), y)};
  });
  return out;
}

Tensor rsqrt(const Tensor& a) {
  require_float("rsqrt", a);
  Tensor out = run_unary(UnaryOp::rsqrt, a);
  record("rsqrt", {a}, {out}, [y = out.detach()](const std::vector<Tensor>& g) {
    // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
    return std::vector<Tensor>{mul(mul(g[0], mul(y, mul(y, y))), -0.5)};
  });
  return out;
}

Tensor abs(const Tensor& a) {
  Tensor out = run_unary(UnaryOp::abs, a);
  record("abs", {a}, {out}, [x = a.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{mul(g[0], sign(x))};
  });
  return out;
}

Tensor square(const Tensor& a) {
  Tensor out = run_unary(UnaryOp::square, a);
  record("square", {a}, {out}, [x = a.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{mul(mul(g[0], x), 2.0)};
  });
  return out;
}

Tensor sign(const Tensor& a) { return run_unary(UnaryOp::sign, a); }

Tensor clamp(const Tensor& a, double lo, double hi) {
  HMOE_CHECK(!(lo > hi), "clamp: lower bound ", lo, " is above upper bound ", hi);
  return fused_activation(UnaryOp::clamp, a, lo, hi);
}

Tensor relu(const Tensor& a) { return fused_activation(UnaryOp::relu, a); }
Tensor gelu(const Tensor& a, bool tanh_approximation) {
  return fused_activation(tanh_approximation ? UnaryOp::gelu_tanh : UnaryOp::gelu_erf, a);
}
Tensor silu(const Tensor& a) { return fused_activation(UnaryOp::silu, a); }
Tensor sigmoid(const Tensor& a) { return fused_activation(UnaryOp::sigmoid, a); }
Tensor tanh(const Tensor& a) { return fused_activation(UnaryOp::tanh, a); }
Tensor softplus(const Tensor& a, double beta, double threshold) {
  HMOE_CHECK(beta > 0, "softplus: beta must be positive, got ", beta);
  return fused_activation(UnaryOp::softplus, a, beta, threshold);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  HMOE_CHECK(cond.dtype() == DType::b8, "where: condition must be bool, got ", cond.meta_str());
  const Device dev = ops::common_device("where", {&cond, &a, &b});
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  const DType ct = promote(a.dtype(), b.dtype());
  Tensor out = Tensor::empty(shape, {ct, dev});
  where_stub.get(dev)(cond.expand(shape).detach(), (a.dtype() == ct ? a : a.to(ct)).expand(shape).detach(),
                      (b.dtype() == ct ? b : b.to(ct)).expand(shape).detach(), out);
  record("where", {a, b}, {out}, [c = cond.detach(), sa = a.shape(), sb = b.shape()](const std::vector<Tensor>& g) {
    const Tensor z = zeros_like(g[0]);
    return std::vector<Tensor>{sum_to(where(c, g[0], z), sa), sum_to(where(c, z, g[0]), sb)};
  });
  return out;
}

Tensor eq(const Tensor& a, const Tensor& b) { return run_binary(BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return run_binary(BinaryOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return run_binary(BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return run_binary(BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return run_binary(BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return run_binary(BinaryOp::ge, a, b); }
Tensor logical_not(const Tensor& a) {
  HMOE_CHECK(a.dtype() == DType::b8, "logical_not: needs a bool tensor, got ", a.meta_str());
  return run_unary(UnaryOp::logical_not, a);
}

}  // namespace hmoe
