// matmul (NumPy batching and broadcasting), linear and the raw gemm entry point, with
// their gradients. Strided operands go to the kernel as (transpose flag, leading dim).
#include "ops/matmul.h"

#include <climits>
#include <optional>

#include "autograd/node.h"
#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/matmul_kernels.h"
#include "ops/reduce.h"

namespace hmoe {

namespace {
// One call's work: each of C's elements a k-long dot product; A and B read once (once in
// all when broadcast over the batch), C written (and read too when beta != 0).
KernelWork gemm_work(const GemmArgs& g, const Tensor& a, const Tensor&, const Tensor&) {
  const double batch = double(g.batch), mn = double(g.m) * double(g.n);
  const double a_el = (g.stride_a ? batch : 1.0) * double(g.m) * double(g.k);
  const double b_el = (g.stride_b ? batch : 1.0) * double(g.k) * double(g.n);
  return {2.0 * batch * mn * double(g.k),
          double(a.element_size()) * (a_el + b_el + batch * mn * (g.beta != 0.0 ? 2.0 : 1.0))};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(GemmKernel, gemm_stub, &gemm_work);

namespace {

// The raw kernel reads through pointers: refuse any layout that would leave storage.
void check_operand(const char* name, const Tensor& t, int64_t batch, int64_t stride, int64_t rows, int64_t cols,
                   int64_t ld) {
  HMOE_CHECK(rows <= INT_MAX && cols <= INT_MAX && ld <= INT_MAX, "gemm: ", name, " is too large for BLAS (",
             rows, " x ", cols, ", ld ", ld, ")");
  if (batch == 0 || rows == 0 || cols == 0) return;
  HMOE_CHECK(ld >= cols && stride >= 0, "gemm: ", name, " has leading dim ", ld, " for ", cols,
             " columns and batch stride ", stride);
  const int64_t last = t.offset() + (batch - 1) * stride + (rows - 1) * ld + cols;
  HMOE_CHECK(last * int64_t(t.element_size()) <= int64_t(t.storage()->nbytes()), "gemm: ", name, " (", rows, " x ",
             cols, ", ld ", ld, ", batch ", batch, " x ", stride, ") runs past the storage of ", t.meta_str());
}

}  // namespace

void gemm(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  const Device dev = ops::common_device("gemm", {&a, &b, &c});
  HMOE_CHECK(a.dtype() == b.dtype() && b.dtype() == c.dtype(), "gemm: dtypes differ (", a.meta_str(), ", ",
             b.meta_str(), ", ", c.meta_str(), ")");
  HMOE_CHECK(is_floating(a.dtype()), "gemm: needs floating-point operands, got ", a.meta_str());
  HMOE_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "gemm: negative size (m ", g.m, ", n ", g.n, ", k ",
             g.k, ", batch ", g.batch, ")");
  check_operand("a", a, g.batch, g.stride_a, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda);
  check_operand("b", b, g.batch, g.stride_b, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb);
  check_operand("c", c, g.batch, g.stride_c, g.m, g.n, g.ldc);
  gemm_stub.get(dev)(g, a, b, c);
  c.storage()->bump_version();
}

namespace {

// How the last two dims of a view map onto BLAS: row-major with leading dim ld, read
// as is or transposed. nullopt when neither fits (expanded or sliced columns).
struct MatLayout {
  bool trans;
  int64_t ld;
};

std::optional<MatLayout> blas_layout(const Tensor& t) {
  const int64_t r = t.size(-2), c = t.size(-1), sr = t.stride(-2), sc = t.stride(-1);
  if ((c == 1 || sc == 1) && (r == 1 || sr >= std::max<int64_t>(c, 1)))
    return MatLayout{false, r == 1 ? std::max<int64_t>(c, 1) : sr};
  if ((r == 1 || sr == 1) && (c == 1 || sc >= std::max<int64_t>(r, 1)))
    return MatLayout{true, c == 1 ? std::max<int64_t>(r, 1) : sc};
  return std::nullopt;
}

// A zero-size view at element `offset` of t's storage: how gemm receives a pointer.
Tensor at_offset(const Tensor& t, int64_t offset) { return Tensor::make_view(t, Shape{}, Shape{}, offset); }

// c [batch..., m, n] (fresh, contiguous) = a @ b, with a [batch..., m, k] and
// b [batch..., k, n] views already expanded to the batch shape (broadcast dims have
// stride 0) and BLAS-compatible in their matrix dims.
void batched_gemm(const Tensor& a, const Tensor& b, const Tensor& c, double beta = 0.0) {
  const int64_t m = c.size(-2), n = c.size(-1), k = a.size(-1);
  const MatLayout la = *blas_layout(a), lb = *blas_layout(b);
  // Batch dims as (size, stride a, stride b, stride c); size-1 dims dropped, dims that
  // step evenly in all three merged, so most cases become one strided batch.
  struct Dim {
    int64_t size, sa, sb, sc;
  };
  std::vector<Dim> dims;
  for (int64_t d = 0; d < c.dim() - 2; ++d) {
    const Dim x{c.size(d), a.stride(d), b.stride(d), c.stride(d)};
    if (x.size == 1) continue;
    if (!dims.empty()) {
      Dim& p = dims.back();
      if (p.sa == x.sa * x.size && p.sb == x.sb * x.size && p.sc == x.sc * x.size) {
        p = {p.size * x.size, x.sa, x.sb, x.sc};
        continue;
      }
    }
    dims.push_back(x);
  }
  GemmArgs g;
  g.trans_a = la.trans;
  g.trans_b = lb.trans;
  g.m = m;
  g.n = n;
  g.k = k;
  g.lda = la.ld;
  g.ldb = lb.ld;
  g.ldc = n;
  g.beta = beta;
  const Dim inner = dims.empty() ? Dim{1, 0, 0, 0} : dims.back();
  if (!dims.empty()) dims.pop_back();
  g.batch = inner.size;
  g.stride_a = inner.sa;
  g.stride_b = inner.sb;
  g.stride_c = inner.sc;
  // B shared by the whole batch and A's rows evenly spaced: one tall GEMM.
  if (g.batch > 1 && g.stride_b == 0 && !g.trans_a && g.stride_a == m * g.lda && g.stride_c == m * g.ldc) {
    g.m *= g.batch;
    g.batch = 1;
  }
  // Remaining (rare: mixed broadcasting) outer dims: one gemm call per index.
  int64_t outer = 1;
  for (const Dim& d : dims) outer *= d.size;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, oa = 0, ob = 0, oc = 0;
    for (size_t i = dims.size(); i-- > 0;) {
      const int64_t idx = rem % dims[i].size;
      rem /= dims[i].size;
      oa += idx * dims[i].sa;
      ob += idx * dims[i].sb;
      oc += idx * dims[i].sc;
    }
    gemm(g, at_offset(a, a.offset() + oa), at_offset(b, b.offset() + ob), at_offset(c, c.offset() + oc));
  }
}

// The operand as the kernel can read it: a copy only when its matrix dims are neither
// row-major nor transposed row-major (copied before expanding, so never per batch).
Tensor blas_ready(const Tensor& t) { return blas_layout(t) ? t : t.contiguous(); }

Tensor matmul_forward(const Tensor& a, const Tensor& b) {
  const Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(ba, bb, "matmul");
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape sa = batch, sb = batch, sc = batch;
  sa.insert(sa.end(), {m, k});
  sb.insert(sb.end(), {k, n});
  sc.insert(sc.end(), {m, n});
  Tensor c = Tensor::empty(sc, {a.dtype(), a.device()});
  if (c.numel() == 0) return c;
  if (k == 0) return c.fill_(0.0);
  const ProfileScope scope("matmul", a.device());  // the work is counted in its gemm calls
  batched_gemm(blas_ready(a.detach()).expand(sa), blas_ready(b.detach()).expand(sb), c);
  return c;
}

// Gradient of a [..., m, k] operand x in g = x @ y when x is a plain matrix and the
// batch is all y's: sum_b g_b y_b^T as one GEMM over [m, B*n] x [B*n, k].
Tensor grad_shared_left(const Tensor& g, const Tensor& y) {
  const int64_t m = g.size(-2), n = g.size(-1), k = y.size(-2);
  const int64_t nb = g.dim() - 2;
  Shape yb(g.shape().begin(), g.shape().end() - 2);
  yb.insert(yb.end(), {k, n});
  std::vector<int64_t> perm;  // [..., r, c] -> [r, ..., c]
  perm.push_back(nb);
  for (int64_t d = 0; d < nb; ++d) perm.push_back(d);
  perm.push_back(nb + 1);
  const int64_t bn = shape_numel(yb) / std::max<int64_t>(k, 1);  // B*n (yb holds k*B*n)
  const Tensor gl = g.permute(perm).reshape({m, bn});
  const Tensor yl = y.expand(yb).permute(perm).reshape({k, bn});
  return matmul(gl, yl.t());
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  ops::common_device("matmul", {&a_in, &b_in});
  HMOE_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: operands must have at least one dim, got ",
             a_in.meta_str(), " and ", b_in.meta_str());
  HMOE_CHECK(a_in.dtype() == b_in.dtype(), "matmul: dtypes differ (", a_in.meta_str(), ", ", b_in.meta_str(),
             "); convert one operand with .to(dtype)");
  HMOE_CHECK(is_floating(a_in.dtype()), "matmul: needs floating-point operands (f32, f64, bf16, f16), got ",
             a_in.meta_str(), " and ", b_in.meta_str());
  const Tensor a = a_in.dim() == 1 ? a_in.unsqueeze(0) : a_in;
  const Tensor b = b_in.dim() == 1 ? b_in.unsqueeze(1) : b_in;
  HMOE_CHECK(a.size(-1) == b.size(-2), "matmul: inner dimensions differ: ", a_in.meta_str(), " @ ", b_in.meta_str());
  Tensor out = matmul_forward(a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  autograd::record("matmul", {a, b}, {out},
                   [xa = gb || ga ? a.detach() : Tensor(), xb = ga || gb ? b.detach() : Tensor(), ga,
                    gb](const std::vector<Tensor>& g) {
                     const Tensor& go = g[0];  // [batch..., m, n]
                     Tensor da, db;
                     if (ga) {
                       // dA = dC B^T; a matrix A shared by a batch of B sums its batch in the GEMM.
                       da = xa.dim() == 2 && go.dim() > 2 ? grad_shared_left(go, xb)
                                                          : sum_to(matmul(go, xb.transpose(-1, -2)), xa.shape());
                     }
                     if (gb) {
                       // dB = A^T dC; a matrix B shared by a batch of A: rows of all batches in one GEMM.
                       if (xb.dim() == 2 && go.dim() > 2) {
                         Shape full_a(go.shape().begin(), go.shape().end() - 1);
                         const int64_t rows = shape_numel(full_a);  // batch * m
                         full_a.push_back(xa.size(-1));
                         db = matmul(xa.expand(full_a).reshape({rows, xa.size(-1)}).t(),
                                     go.reshape({rows, go.size(-1)}));
                       } else {
                         db = sum_to(matmul(xa.transpose(-1, -2), go), xb.shape());
                       }
                     }
                     return std::vector<Tensor>{da, db};
                   });
  if (a_in.dim() == 1) out = out.squeeze(-2);
  if (b_in.dim() == 1) out = out.squeeze(-1);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  ops::common_device("linear", {&x, &w});
  HMOE_CHECK(w.dim() == 2, "linear: weight must be [out, in], got ", w.meta_str());
  HMOE_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", x.meta_str(), " does not match weight ",
             w.meta_str());
  HMOE_CHECK(x.dtype() == w.dtype(), "linear: dtypes differ (input ", x.meta_str(), ", weight ", w.meta_str(), ")");
  HMOE_CHECK(is_floating(x.dtype()), "linear: needs floating-point tensors, got ", x.meta_str());
  if (bias.defined()) {
    ops::common_device("linear", {&x, &bias});
    HMOE_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ", bias.meta_str(),
               " does not match weight ", w.meta_str());
    HMOE_CHECK(bias.dtype() == x.dtype(), "linear: dtypes differ (input ", x.meta_str(), ", bias ", bias.meta_str(),
               ")");
  }
  const int64_t in = w.size(1), out_f = w.size(0);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  // All leading dims are rows of one GEMM: y [rows, out] = x2 [rows, in] W^T (+ bias
  // broadcast into y first, accumulated with beta = 1).
  const int64_t rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  const Tensor x2 = blas_ready(x.detach().reshape({rows, in}));
  Tensor y = Tensor::empty(out_shape, {x.dtype(), x.device()});
  Tensor y2 = y.view({rows, out_f});
  if (bias.defined()) y2.copy_(bias.detach());
  else y2.fill_(0.0);
  if (y.numel() > 0 && in > 0) {
    const ProfileScope scope("linear", x.device());  // the work is counted in its gemm call
    batched_gemm(x2, blas_ready(w.detach().t()), y2, 1.0);
  }
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gbias = bias.defined() && bias.requires_grad();
  autograd::record("linear", {x, w, bias}, {y},
                   [xs = gw ? x2 : Tensor(), ws = gx ? w.detach() : Tensor(), x_shape = x.shape(), rows, out_f, gx, gw,
                    gbias](const std::vector<Tensor>& g) {
                     const Tensor g2 = g[0].reshape({rows, out_f});
                     return std::vector<Tensor>{gx ? matmul(g2, ws).reshape(x_shape) : Tensor(),
                                                gw ? matmul(g2.t(), xs) : Tensor(),
                                                gbias ? sum(g2, {0}) : Tensor()};
                   });
  return y;
}

}  // namespace hmoe
