// The grouped GEMM op: input checks, dispatch, and its backward (dX through the same
// kernel with W^T and a deterministic scatter back through the gather index, dW/db
// grouped over rows, dscale as a row dot product).
#include "ops/moe/grouped_gemm.h"

#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::moe {

namespace {
// The kernels' cost models (ops/dispatch.h). A gathered x is read at most once per
// distinct row: the fewest bytes are those of min(rows, x_rows) rows.
double x_bytes(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index) {
  return double(index.defined() ? std::min(a.rows, a.x_rows) : a.rows) * double(a.k) * double(x.element_size());
}

KernelWork grouped_gemm_work(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor&,
                             const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out) {
  using ops::distinct_bytes;
  // out_act_grad reads the pre-activation in out before overwriting it, and multiplies.
  const double dh = a.out_act_grad ? 1.0 : 0.0;
  return {2.0 * double(a.rows) * double(a.k) * double(a.n) + dh * double(a.rows) * double(a.n),
          x_bytes(a, x, index) + distinct_bytes(w) + distinct_bytes(index) + distinct_bytes(scale) +
              distinct_bytes(bias) + (1.0 + dh) * distinct_bytes(out)};
}

KernelWork grouped_dw_work(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                           const Tensor&, const Tensor& dw, const Tensor& db) {
  using ops::distinct_bytes;
  const double rn = double(a.rows) * double(a.n);
  return {(dw.defined() ? 2.0 * rn * double(a.k) : 0.0) + (db.defined() ? rn : 0.0),
          (dw.defined() ? x_bytes(a, x, index) + distinct_bytes(index) : 0.0) + distinct_bytes(dy) +
              distinct_bytes(dw) + distinct_bytes(db)};
}

KernelWork grouped_row_dot_work(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& gx,
                                const Tensor& dy, const Tensor& bias, const Tensor&, const Tensor& out) {
  using ops::distinct_bytes;
  const double with_bias = bias.defined() ? 1.0 : 0.0;
  return {2.0 * double(a.rows) * (double(a.k) + with_bias * double(a.n)),
          x_bytes(a, x, index) + distinct_bytes(index) + distinct_bytes(gx) +
              with_bias * (distinct_bytes(dy) + distinct_bytes(bias)) + distinct_bytes(out)};
}

KernelWork scatter_rows_work(const Tensor& src, const Tensor& index, const Tensor& scale, const Tensor& out) {
  using ops::distinct_bytes;
  return {double(src.numel()) * (scale.defined() ? 2.0 : 1.0),
          distinct_bytes(src) + distinct_bytes(index) + distinct_bytes(scale) + distinct_bytes(out)};
}
}  // namespace

HMOE_DEFINE_STUB_WITH_WORK(GroupedGemmKernel, grouped_gemm_stub, &grouped_gemm_work);
HMOE_DEFINE_STUB_WITH_WORK(GroupedGemmDwKernel, grouped_gemm_dw_stub, &grouped_dw_work);
HMOE_DEFINE_STUB_WITH_WORK(GroupedRowDotKernel, grouped_row_dot_stub, &grouped_row_dot_work);
HMOE_DEFINE_STUB_WITH_WORK(ScatterRowsKernel, scatter_rows_stub, &scatter_rows_work);

namespace {
std::string meta(const Tensor& t) { return t.defined() ? t.meta_str() : std::string("undefined"); }
}  // namespace

int64_t check_group_offsets(const char* op, const Tensor& offsets, int64_t groups) {
  HMOE_CHECK(offsets.defined() && offsets.dim() == 1 && offsets.numel() == groups + 1 &&
                 offsets.dtype() == DType::i64 && offsets.device().is_cpu(),
             op, ": offsets must be a cpu i64 [G + 1 = ", groups + 1, "] tensor, got ", meta(offsets));
  const Tensor off = offsets.contiguous();
  const int64_t* o = off.data_ptr<int64_t>();
  HMOE_CHECK(o[0] == 0, op, ": offsets must run from 0 to M, got offsets[0] = ", o[0]);
  for (int64_t g = 0; g < groups; ++g)
    HMOE_CHECK(o[g + 1] >= o[g], op, ": offsets must not decrease (offsets[", g, "] = ", o[g], ", offsets[", g + 1,
               "] = ", o[g + 1], ")");
  return o[groups];
}

Tensor check_gather_index(const char* op, const Tensor& index_in, int64_t M, const Tensor& x) {
  if (!index_in.defined()) return Tensor();
  HMOE_CHECK(index_in.dim() == 1 && index_in.numel() == M &&
                 (index_in.dtype() == DType::i64 || index_in.dtype() == DType::i32),
             op, ": index must be integer [M = ", M, "], got ", meta(index_in));
  const Tensor index = index_in.to(DType::i64).contiguous();
  // Validated here once, so kernels (and the backward) may trust it.
  const Tensor ih = index.device().is_cpu() ? index : index.to(Device::cpu());  // a device index: one read-back
  const int64_t* ix = ih.data_ptr<int64_t>();
  for (int64_t r = 0; r < M; ++r)
    HMOE_CHECK(ix[r] >= -1 && ix[r] < x.size(0), op, ": index ", ix[r], " at row ", r, " is out of range [-1, ",
               x.size(0), ") for x ", x.meta_str());
  return index;
}

std::string_view name(GroupedGemmBackend b) {
  switch (b) {
    case GroupedGemmBackend::hmoe:
      return "hmoe";
    case GroupedGemmBackend::cublas:
      return "cublas";
    case GroupedGemmBackend::auto_:
      return "auto";
  }
  return "?";
}

GroupedGemmBackend parse_grouped_gemm_backend(std::string_view s) {
  for (GroupedGemmBackend b : {GroupedGemmBackend::hmoe, GroupedGemmBackend::cublas, GroupedGemmBackend::auto_})
    if (name(b) == s) return b;
  HMOE_FAIL("grouped GEMM backend: '", s, "' is not one of hmoe, cublas, auto");
}

Tensor grouped_gemm(const Tensor& x_in, const Tensor& w_in, const Tensor& offsets, const Tensor& index_in,
                    const Tensor& scale_in, const Tensor& bias_in, GroupedGemmBackend backend) {
  HMOE_CHECK(x_in.defined() && w_in.defined() && x_in.dim() == 2 && w_in.dim() == 3 && x_in.size(1) == w_in.size(1) &&
                 is_floating(x_in.dtype()) && x_in.dtype() == w_in.dtype(),
             "grouped_gemm: x ", meta(x_in), " and w ", meta(w_in), " must be float [M, K] and [G, K, N] of one dtype");
  const int64_t G = w_in.size(0), K = w_in.size(1), N = w_in.size(2);
  const int64_t M = check_group_offsets("grouped_gemm", offsets, G);
  const Tensor off = offsets.contiguous();
  const bool has_index = index_in.defined();
  HMOE_CHECK(has_index || x_in.size(0) == M, "grouped_gemm: offsets must run from 0 to M = ", x_in.size(0),
             " (rows of x), got offsets[G] = ", M);
  HMOE_CHECK(!scale_in.defined() || (scale_in.dim() == 1 && scale_in.numel() == M && is_floating(scale_in.dtype())),
             "grouped_gemm: scale must be float [M = ", M, "], got ", meta(scale_in));
  HMOE_CHECK(!bias_in.defined() || (bias_in.dim() == 2 && bias_in.size(0) == G && bias_in.size(1) == N &&
                                    is_floating(bias_in.dtype())),
             "grouped_gemm: bias must be float [G, N] = [", G, ", ", N, "], got ", meta(bias_in));
  const Device dev = ops::common_device("grouped_gemm", {&x_in, &w_in, &index_in, &scale_in, &bias_in});
  const bool half = x_in.dtype() != DType::f32 && x_in.dtype() != DType::f64;
  if (half && !dev.is_cuda()) {  // bf16 / f16 off the GPU: compute in f32
    const DType dt = x_in.dtype();
    auto up = [](const Tensor& t) { return t.defined() ? t.to(DType::f32) : t; };
    return grouped_gemm(up(x_in), up(w_in), off, index_in, up(scale_in), up(bias_in), backend).to(dt);
  }
  // On the cuda device bf16 / f16 x and w go to the tensor-core kernel as they are (f32
  // accumulation, out in x's dtype); scale and bias (and their gradients) stay in the
  // compute dtype ct, f32 there.
  const DType dt = x_in.dtype(), ct = half ? DType::f32 : dt;
  const Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const Tensor index = check_gather_index("grouped_gemm", index_in, M, x);
  const Tensor scale = scale_in.defined() ? scale_in.to(ct).contiguous() : Tensor();
  const Tensor bias = bias_in.defined() ? bias_in.to(ct).contiguous() : Tensor();
  GroupedGemmArgs a{G, M, K, N, x.size(0), false};
  a.backend = backend;
  Tensor out = Tensor::empty({M, N}, {dt, dev});
  auto opt = [](const Tensor& t) { return t.defined() ? t.detach() : t; };
  grouped_gemm_stub.get(dev)(a, x.detach(), w.detach(), off, index, opt(scale), opt(bias), out);

  const bool nx = x.requires_grad(), nw = w.requires_grad();
  const bool ns = scale.defined() && scale.requires_grad(), nb = bias.defined() && bias.requires_grad();
  autograd::record(
      "grouped_gemm", {x, w, scale, bias}, {out},
      [a, xs = x.detach(), ws = w.detach(), off, index, sc = opt(scale), bs = opt(bias), ct, nx, nw, ns,
       nb](const std::vector<Tensor>& gr) {
        const Device d = xs.device();
        const DType dt = xs.dtype();
        const Tensor dy = gr[0].to(dt).contiguous();
        std::vector<Tensor> res(4);
        if (nx || ns) {
          // gx = dy W_g^T, rows in slot order (unscaled); dX = scatter(scale * gx), dscale = <xrow, gx> + <dy, b>.
          GroupedGemmArgs t{a.groups, a.rows, a.n, a.k, a.rows, true};
          t.backend = a.backend;
          Tensor gx = Tensor::empty({a.rows, a.k}, {dt, d});
          grouped_gemm_stub.get(d)(t, dy, ws, off, Tensor(), Tensor(), Tensor(), gx);
          if (ns) {
            res[2] = Tensor::empty({a.rows}, {ct, d});
            grouped_row_dot_stub.get(d)(a, xs, index, gx, dy, bs, off, res[2]);
          }
          if (nx) {
            if (index.defined()) {
              res[0] = Tensor::empty({a.x_rows, a.k}, {dt, d});
              scatter_rows_stub.get(d)(gx, index, sc, res[0]);
            } else {
              res[0] = sc.defined() ? mul(gx, sc.unsqueeze(1)).to(dt) : gx;
            }
          }
        }
        if (nw || nb) {
          const Tensor dys = sc.defined() ? mul(dy, sc.unsqueeze(1)).to(dt).contiguous() : dy;
          if (nw) res[1] = Tensor::empty({a.groups, a.k, a.n}, {dt, d});
          if (nb) res[3] = Tensor::empty({a.groups, a.n}, {ct, d});
          grouped_gemm_dw_stub.get(d)(a, xs, index, dys, off, res[1], res[3]);
        }
        return res;
      });
  return out;
}

}  // namespace hmoe::moe
