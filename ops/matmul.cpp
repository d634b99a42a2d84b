// matmul (NumPy batching and broadcasting) and linear, with their gradients.
#include "ops/matmul.h"

#include "autograd/node.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace hmoe {

HMOE_DEFINE_STUB(GemmKernel, gemm_stub);

void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c) {
  gemm_stub.get(ops::common_device("gemm", {&a, &b, &c}))(args, a, b, c);
}

namespace {

// A matrix operand as (contiguous tensor, transposed?, leading dim): a transposed
// view of a contiguous matrix is passed as a flag instead of copied.
struct Operand {
  Tensor t;
  bool trans = false;
  int64_t ld = 0;
};

Operand as_operand(const Tensor& m) {  // m: [..., r, c] with contiguous batch dims
  const int64_t r = m.size(-2), c = m.size(-1);
  const int64_t d = m.dim();
  bool batch_ok = true;
  int64_t expect = r * c;
  for (int64_t i = d - 3; i >= 0; --i) {
    if (m.size(i) != 1 && m.stride(i) != expect) batch_ok = false;
    expect *= m.size(i);
  }
  if (batch_ok && m.stride(-1) == 1 && m.stride(-2) == c) return {m, false, c};
  if (batch_ok && m.stride(-2) == 1 && m.stride(-1) == r) return {m, true, r};
  Tensor cm = m.contiguous();
  return {cm, false, c};
}

// C[B, m, n] = A[B, m, k] B[B, k, n] for equal batch shapes (already broadcast).
Tensor batched_mm(const Tensor& a, const Tensor& b) {
  const Shape batch(a.shape().begin(), a.shape().end() - 2);
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor c = Tensor::empty(out_shape, {a.dtype(), a.device()});
  const Operand oa = as_operand(a.detach()), ob = as_operand(b.detach());
  GemmArgs g;
  g.trans_a = oa.trans;
  g.trans_b = ob.trans;
  g.m = m;
  g.n = n;
  g.k = k;
  g.lda = oa.ld;
  g.ldb = ob.ld;
  g.ldc = n;
  g.batch = shape_numel(batch);
  g.stride_a = m * k;
  g.stride_b = k * n;
  g.stride_c = m * n;
  {
    ProfileScope s("matmul", a.device(), 2.0 * double(g.batch) * double(m) * double(n) * double(k),
                   double((g.batch * (m * k + k * n + m * n)) * int64_t(a.element_size())));
    gemm(g, oa.t, ob.t, c);
  }
  return c;
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  ops::common_device("matmul", {&a_in, &b_in});
  HMOE_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: operands must have at least one dim, got ",
             a_in.meta_str(), " and ", b_in.meta_str());
  HMOE_CHECK(a_in.dtype() == b_in.dtype(), "matmul: dtypes differ (", a_in.meta_str(), ", ", b_in.meta_str(), ")");
  HMOE_CHECK(is_floating(a_in.dtype()), "matmul: needs floating-point operands, got ", a_in.meta_str());
  Tensor a = a_in.dim() == 1 ? a_in.unsqueeze(0) : a_in;
  Tensor b = b_in.dim() == 1 ? b_in.unsqueeze(1) : b_in;
  HMOE_CHECK(a.size(-1) == b.size(-2), "matmul: inner dimensions differ: ", a_in.meta_str(), " @ ", b_in.meta_str());
  const Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  Shape sa = batch, sb = batch;
  sa.push_back(a.size(-2));
  sa.push_back(a.size(-1));
  sb.push_back(b.size(-2));
  sb.push_back(b.size(-1));
  Tensor out = batched_mm(a.expand(sa), b.expand(sb));
  autograd::record("matmul", {a, b}, {out}, [sa_ = a.detach(), sb_ = b.detach()](const std::vector<Tensor>& g) {
    const Tensor& go = g[0];
    Tensor ga = matmul(go, sb_.transpose(-1, -2));
    Tensor gb = matmul(sa_.transpose(-1, -2), go);
    return std::vector<Tensor>{sum_to(ga, sa_.shape()), sum_to(gb, sb_.shape())};
  });
  if (a_in.dim() == 1) out = out.squeeze(-2);
  if (b_in.dim() == 1) out = out.squeeze(-1);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  HMOE_CHECK(w.dim() == 2, "linear: weight must be [out, in], got ", w.meta_str());
  HMOE_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", x.meta_str(), " does not match weight ",
             w.meta_str());
  HMOE_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.size(0)), "linear: bias ", bias.meta_str(),
             " does not match weight ", w.meta_str());
  Shape out_shape = x.shape();
  out_shape.back() = w.size(0);
  Tensor y = matmul(x.reshape({-1, x.size(-1)}), w.t());
  if (bias.defined()) y = y + bias;
  return y.reshape(out_shape);
}

}  // namespace hmoe
