// The grouped FFN op: checks, a forward over chunks of whole groups (the activation
// fused into the second GEMM's read of h), and a backward that recomputes the activation
// from the saved pre-activation inside the GEMMs that need it, chunk by chunk, with the
// same kernels as grouped_gemm.
#include "ops/moe/grouped_ffn.h"

#include <algorithm>
#include <vector>

#include "autograd/node.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::moe {
namespace {

std::string meta(const Tensor& t) { return t.defined() ? t.meta_str() : std::string("undefined"); }

struct Chunk {
  int64_t g0, g1, r0, r1;  // groups [g0, g1), rows [r0, r1)
};

// Consecutive whole groups of at most `budget` rows each (a larger group alone).
std::vector<Chunk> make_chunks(const int64_t* off, int64_t groups, int64_t budget) {
  std::vector<Chunk> chunks;
  for (int64_t g0 = 0; g0 < groups;) {
    int64_t g1 = g0 + 1;
    while (g1 < groups && off[g1 + 1] - off[g0] <= budget) ++g1;
    chunks.push_back({g0, g1, off[g0], off[g1]});
    g0 = g1;
  }
  return chunks;
}

Tensor groups_of(const Tensor& t, const Chunk& c) { return t.defined() ? t.narrow(0, c.g0, c.g1 - c.g0) : t; }
Tensor rows_of(const Tensor& t, const Chunk& c) { return t.defined() ? t.narrow(0, c.r0, c.r1 - c.r0) : t; }

// One chunk and its view of the first GEMM's operands: its offsets rebased to start at 0,
// and the rows of x it reads (all of x through its slice of the gather index, or its own
// rows). Made once in the forward and kept for the backward.
struct ChunkView {
  Chunk c;
  GroupedGemmArgs args;  // k = d, n = f
  Tensor offsets, index, x;

  ChunkView(const Chunk& chunk, const int64_t* off, int64_t d, int64_t f, const Tensor& x_all, const Tensor& index_all)
      : c(chunk), args{c.g1 - c.g0, c.r1 - c.r0, d, f, 0, false} {
    offsets = Tensor::empty({args.groups + 1}, {DType::i64});
    int64_t* o = offsets.data_ptr<int64_t>();
    for (int64_t g = c.g0; g <= c.g1; ++g) o[g - c.g0] = off[g] - c.r0;
    index = rows_of(index_all, c);
    x = index.defined() ? x_all : rows_of(x_all, c);
    args.x_rows = x.size(0);
  }
};

}  // namespace

Tensor grouped_ffn(const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in, const Tensor& w2_in,
                   const Tensor& b2_in, const Tensor& offsets, const Tensor& index_in, UnaryOp act,
                   int64_t chunk_rows) {
  HMOE_CHECK(x_in.defined() && w1_in.defined() && w2_in.defined() && x_in.dim() == 2 && w1_in.dim() == 3 &&
                 w2_in.dim() == 3 && is_floating(x_in.dtype()) && w1_in.dtype() == x_in.dtype() &&
                 w2_in.dtype() == x_in.dtype() && x_in.size(1) == w1_in.size(1) && w2_in.size(0) == w1_in.size(0) &&
                 w2_in.size(1) == w1_in.size(2),
             "grouped_ffn: x ", meta(x_in), ", w1 ", meta(w1_in), " and w2 ", meta(w2_in),
             " must be float [X, d], [G, d, f] and [G, f, e] of one dtype");
  const int64_t G = w1_in.size(0), d = w1_in.size(1), f = w1_in.size(2), e = w2_in.size(2);
  HMOE_CHECK(!b1_in.defined() || (b1_in.shape() == Shape{G, f} && is_floating(b1_in.dtype())),
             "grouped_ffn: b1 must be float [G, f] = [", G, ", ", f, "], got ", meta(b1_in));
  HMOE_CHECK(!b2_in.defined() || (b2_in.shape() == Shape{G, e} && is_floating(b2_in.dtype())),
             "grouped_ffn: b2 must be float [G, e] = [", G, ", ", e, "], got ", meta(b2_in));
  HMOE_CHECK(act == UnaryOp::relu || act == UnaryOp::gelu_erf || act == UnaryOp::gelu_tanh || act == UnaryOp::silu,
             "grouped_ffn: the activation must be relu, gelu (erf or tanh) or silu, got UnaryOp ", int(act));
  HMOE_CHECK(chunk_rows >= 0, "grouped_ffn: chunk_rows must be >= 0 (0: the device's default), got ", chunk_rows);
  const int64_t M = check_group_offsets("grouped_ffn", offsets, G);
  HMOE_CHECK(index_in.defined() || x_in.size(0) == M, "grouped_ffn: offsets must run from 0 to M = ", x_in.size(0),
             " (rows of x, no index given), got offsets[G] = ", M);
  const Device dev = ops::common_device("grouped_ffn", {&x_in, &w1_in, &b1_in, &w2_in, &b2_in, &index_in});
  const bool half = x_in.dtype() != DType::f32 && x_in.dtype() != DType::f64;
  if (half && !dev.is_cuda()) {
    // bf16 / f16 off the GPU: the composite, whose ops compute in f32 and round each
    // output (the pre-activation, the activation) to the half type, as the device does.
    Tensor h = grouped_gemm(x_in, w1_in, offsets, index_in, Tensor(), b1_in);
    Tensor a = act == UnaryOp::relu ? relu(h) : act == UnaryOp::silu ? silu(h) : gelu(h, act == UnaryOp::gelu_tanh);
    return grouped_gemm(a, w2_in, offsets, Tensor(), Tensor(), b2_in);
  }
  // As in grouped_gemm: half x and w stay native on the cuda device, biases in f32.
  const DType dt = x_in.dtype(), ct = half ? DType::f32 : dt;
  const Tensor x = x_in.contiguous(), w1 = w1_in.contiguous(), w2 = w2_in.contiguous();
  const Tensor off = offsets.contiguous();
  const Tensor index = check_gather_index("grouped_ffn", index_in, M, x);
  const Tensor b1 = b1_in.defined() ? b1_in.to(ct).contiguous() : Tensor();
  const Tensor b2 = b2_in.defined() ? b2_in.to(ct).contiguous() : Tensor();
  // Chunks of groups: the kernels make no [rows, f] temporary (dh goes over h), so by
  // default all rows are one chunk; smaller chunks give the same bits.
  const int64_t budget = chunk_rows > 0 ? chunk_rows : std::max<int64_t>(M, 1);

  auto det = [](const Tensor& t) { return t.defined() ? t.detach() : t; };
  const Tensor xd = x.detach(), w1d = w1.detach(), w2d = w2.detach(), b1d = det(b1), b2d = det(b2);
  // The activation is fused into the GEMMs around it (read as act(h) while packing A,
  // dh made in the epilogue over h): no [M, f] buffer besides h, one pass over it less.
  Tensor h = Tensor::empty({M, f}, {dt, dev});  // the pre-activation, saved for the backward
  Tensor y = Tensor::empty({M, e}, {dt, dev});
  const auto& gemm = grouped_gemm_stub.get(dev);
  std::vector<ChunkView> views;
  for (const Chunk& c : make_chunks(off.data_ptr<int64_t>(), G, budget))
    views.emplace_back(c, off.data_ptr<int64_t>(), d, f, xd, index);
  for (const ChunkView& v : views) {
    const Chunk& c = v.c;
    const Tensor hc = rows_of(h, c);
    gemm(v.args, v.x, groups_of(w1d, c), v.offsets, v.index, Tensor(), groups_of(b1d, c), hc);
    GroupedGemmArgs a2{v.args.groups, v.args.rows, f, e, v.args.rows, false};
    a2.x_act = act;
    gemm(a2, hc, groups_of(w2d, c), v.offsets, Tensor(), Tensor(), groups_of(b2d, c), rows_of(y, c));
  }

  const bool nx = x.requires_grad(), nw1 = w1.requires_grad(), nw2 = w2.requires_grad();
  const bool nb1 = b1.defined() && b1.requires_grad(), nb2 = b2.defined() && b2.requires_grad();
  autograd::record(
      "grouped_ffn", {x, w1, b1, w2, b2}, {y},
      [xd, w1d, w2d, h, index, views, act, d, f, e, ct, nx, nw1, nw2, nb1, nb2](std::vector<Tensor> gr) mutable {
        const Device dv = xd.device();
        const DType dt = xd.dtype();
        const int64_t M = h.size(0), G = w1d.size(0), X = xd.size(0);
        // dy and h are dropped after their last use (h only when it dies with this call),
        // so that neither is alive when dX is gathered into dx.
        Tensor dy = gr[0].to(dt).contiguous();
        gr.clear();
        const bool expire = autograd::saved_tensors_expire();
        // Results are made when first written, so that no buffer is alive before it must be.
        struct Result {
          bool need;
          Shape shape;
          DType type;
        };
        const Result spec[5] = {
            {nx, {X, d}, dt}, {nw1, {G, d, f}, dt}, {nb1, {G, f}, ct}, {nw2, {G, f, e}, dt}, {nb2, {G, e}, ct}};
        std::vector<Tensor> res(5);  // dx, dw1, db1, dw2, db2
        auto make = [&](size_t i) -> const Tensor& {
          if (spec[i].need && !res[i].defined()) res[i] = Tensor::empty(spec[i].shape, {spec[i].type, dv});
          return res[i];
        };
        Tensor gx;  // dx rows in slot order
        const auto& gemm = grouped_gemm_stub.get(dv);
        const auto& gemm_dw = grouped_gemm_dw_stub.get(dv);
        for (size_t ci = 0; ci < views.size(); ++ci) {
          const ChunkView& v = views[ci];
          const Chunk& c = v.c;
          const int64_t gn = v.args.groups, rows = v.args.rows;
          const bool last = ci + 1 == views.size();
          Tensor hc = rows_of(h, c), dyc = rows_of(dy, c);
          if (nw2 || nb2) {  // the activation, recomputed while packing, only for dW2
            GroupedGemmArgs a{gn, rows, f, e, rows, false};
            a.x_act = act;
            gemm_dw(a, hc, Tensor(), dyc, v.offsets, groups_of(make(3), c), groups_of(make(4), c));
          }
          if (!(nx || nw1 || nb1)) continue;
          // dh = (dy W2^T) * act'(h), over h itself when h dies with this call (no
          // retain_graph; h is not read after this), else over a copy of h.
          GroupedGemmArgs a{gn, rows, e, f, rows, true};
          a.out_act_grad = act;
          Tensor dh = expire ? hc : hc.clone();
          gemm(a, dyc, groups_of(w2d, c), v.offsets, Tensor(), Tensor(), Tensor(), dh);
          if (last) dy = dyc = Tensor();
          if (nw1 || nb1) gemm_dw(v.args, v.x, v.index, dh, v.offsets, groups_of(make(1), c), groups_of(make(2), c));
          if (nx) {
            if (!gx.defined()) gx = Tensor::empty({M, d}, {dt, dv});
            gemm(GroupedGemmArgs{gn, rows, f, d, rows, true}, dh, groups_of(w1d, c), v.offsets, Tensor(), Tensor(),
                 Tensor(), rows_of(gx, c));
          }
          if (last && expire) h = hc = dh = Tensor();
        }
        for (size_t i = 1; i < 5; ++i) make(i);  // G = 0: no chunk wrote them
        if (nx) {
          if (!gx.defined()) gx = Tensor::empty({M, d}, {dt, dv});
          if (index.defined()) {
            scatter_rows_stub.get(dv)(gx, index, Tensor(), make(0));
          } else {
            res[0] = gx;
          }
        }
        return res;
      });
  return y;
}

}  // namespace hmoe::moe
