// The grouped FFN op: checks, a forward over chunks of whole groups (the activation
// fused into the second GEMM's read of h), and a backward that recomputes the activation
// from the pre-activation (saved, or made again) inside the GEMMs that need it, chunk by
// chunk, with the same kernels as grouped_gemm; the chunks run in order or, on the CPU,
// as tasks on the thread pool.
//
// Memory. The activation is fused into the GEMMs on every device (applied to h while the
// second GEMM and dW2 load it; dh made in the epilogue of dy W2^T), so no [M, f] buffer
// besides h exists. The backward writes dh over h when the graph is not retained, writes
// dx's rows over dy's (d = e, a dy nothing else holds), and makes each gradient only when
// it is first written.
//
// Chunks. chunk_rows == 0 on the CPU with at least two groups per thread: every group a
// task on the thread pool, its GEMMs run whole on one thread (largest groups first;
// recomputing, a task holds its group's h, in parts of at most 2 MiB in f32, whose
// weight gradients in f32 continue each other's sums); otherwise one chunk, or
// recomputing about a quarter of the rows per chunk.
#include "ops/moe/grouped_ffn.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <vector>

#include "autograd/node.h"
#include "engine/profiler.h"
#include "engine/thread_pool.h"
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

  ChunkView(const Chunk& chunk, const int64_t* off, int64_t d, int64_t f, const Tensor& x_all, const Tensor& index_all,
            GroupedGemmBackend backend)
      : c(chunk), args{c.g1 - c.g0, c.r1 - c.r0, d, f, 0, false} {
    args.backend = backend;
    offsets = Tensor::empty({args.groups + 1}, {DType::i64});
    int64_t* o = offsets.data_ptr<int64_t>();
    for (int64_t g = c.g0; g <= c.g1; ++g) o[g - c.g0] = off[g] - c.r0;
    index = rows_of(index_all, c);
    x = index.defined() ? x_all : rows_of(x_all, c);
    args.x_rows = x.size(0);
  }

  // The args of another of the chunk's GEMMs: its rows, inner size k, n output columns.
  GroupedGemmArgs gemm_args(int64_t k, int64_t n, bool trans_w) const {
    GroupedGemmArgs a{args.groups, args.rows, k, n, args.rows, trans_w};
    a.backend = args.backend;
    return a;
  }

  // Rows [p0, p1) of a one-group chunk, as a chunk of their own.
  ChunkView part(int64_t p0, int64_t p1) const {
    HMOE_CHECK(args.groups == 1, "grouped_ffn: only a one-group chunk is split into parts");
    ChunkView v = *this;
    v.c.r0 = c.r0 + p0;
    v.c.r1 = c.r0 + p1;
    v.args.rows = p1 - p0;
    v.offsets = Tensor::empty({2}, {DType::i64});
    v.offsets.data_ptr<int64_t>()[0] = 0;
    v.offsets.data_ptr<int64_t>()[1] = p1 - p0;
    v.index = index.defined() ? index.narrow(0, p0, p1 - p0) : index;
    v.x = index.defined() ? x : x.narrow(0, p0, p1 - p0);
    v.args.x_rows = v.x.size(0);
    return v;
  }
};

// The rows of each part when a chunk of `rows` is split into parts of at most `most`.
int64_t part_rows(int64_t rows, int64_t most) {
  if (rows <= most) return rows;
  const int64_t parts = (rows + most - 1) / most;
  return (rows + parts - 1) / parts;
}

// The grouped GEMM kernels a chunk calls. Chunks run in order call them as any op does;
// chunks run as tasks call the kernel functions directly (the profiler records one
// thread, not the pool's) and add their work to one event around all the tasks.
struct ChunkKernels {
  ops::BoundKernel<GroupedGemmKernel> gemm;
  ops::BoundKernel<GroupedGemmDwKernel> gemm_dw;
  std::mutex* mu = nullptr;    // set while chunks run as tasks; guards work
  KernelWork* work = nullptr;  // the tasks' work, while profiled

  template <typename K, typename... A>
  void run(const K& k, const A&... a) const {
    if (!mu) return k(a...);
    if (work && k.work) {  // whole numbers of FLOPs and bytes: any order sums them exactly
      const KernelWork w = k.work(a...);
      const std::lock_guard<std::mutex> lk(*mu);
      work->flops += w.flops;
      work->bytes += w.bytes;
    }
    k.fn(a...);
  }
  template <typename... A>
  void gemm_call(const A&... a) const {
    run(gemm, a...);
  }
  template <typename... A>
  void dw_call(const A&... a) const {
    run(gemm_dw, a...);
  }
};

// Runs fn(view, step, kernels, scratch) for each chunk: in order, or as tasks on the
// CPU's thread pool, largest first, each whole on one thread (the kernels then run inline
// there). scratch: the chunk's rows of a [rows, scratch.cols] buffer, one buffer per chunk
// running at once (one in order, at most one per thread as tasks), made before any runs.
// A one-group chunk of more than scratch.most_rows rows runs as parts of that many rows
// at most, in order, each a view of its own: its results' rows are the part's, and its
// weight gradients must continue the sums of the parts before it (step.continues).
struct ScratchSpec {
  int64_t cols = 0;  // 0: none
  TensorOptions options;
  int64_t most_rows = std::numeric_limits<int64_t>::max();
};

struct ChunkStep {
  bool last;       // the final chunk (and part) of an ordered run; never a task's
  bool continues;  // a part after the first of its chunk
};

void for_chunks(const std::vector<ChunkView>& views, bool tasks, Device dev, const ScratchSpec& scratch,
                const std::function<void(const ChunkView&, ChunkStep, const ChunkKernels&, const Tensor&)>& fn) {
  ChunkKernels k{grouped_gemm_stub.get(dev), grouped_gemm_dw_stub.get(dev)};
  int64_t rows = 0;
  for (const ChunkView& v : views) rows = std::max(rows, part_rows(v.args.rows, scratch.most_rows));
  int64_t n_buf = 0;
  if (scratch.cols > 0 && !views.empty()) n_buf = tasks ? std::min<int64_t>(num_threads(), int64_t(views.size())) : 1;
  std::vector<Tensor> bufs;
  for (int64_t i = 0; i < n_buf; ++i) bufs.push_back(Tensor::empty({rows, scratch.cols}, scratch.options));
  auto run = [&](const ChunkView& v, bool last, const Tensor& buf) {
    auto rows_for = [&](const ChunkView& p) { return buf.defined() ? buf.narrow(0, 0, p.args.rows) : buf; };
    const int64_t step = part_rows(v.args.rows, scratch.most_rows);
    if (step == v.args.rows) return fn(v, {last, false}, k, rows_for(v));
    for (int64_t p0 = 0; p0 < v.args.rows; p0 += step) {
      const ChunkView p = v.part(p0, std::min(v.args.rows, p0 + step));
      fn(p, {last && p.c.r1 == v.c.r1, p0 > 0}, k, rows_for(p));
    }
  };
  if (!tasks) {
    const Tensor buf = bufs.empty() ? Tensor() : bufs[0];
    for (size_t i = 0; i < views.size(); ++i) run(views[i], i + 1 == views.size(), buf);
    return;
  }
  ProfileScope scope("grouped_ffn chunk tasks", dev);
  std::mutex mu;
  KernelWork work;
  k.mu = &mu;
  k.work = scope.active() ? &work : nullptr;
  std::vector<size_t> order(views.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return views[a].args.rows > views[b].args.rows; });
  // A range of chunks runs on one thread, and no more ranges run at once than there are
  // threads: each takes a free buffer for its span.
  std::vector<Tensor> free = std::move(bufs);
  parallel_for(int64_t(order.size()), 1, [&](int64_t lo, int64_t hi) {
    Tensor buf;
    if (n_buf > 0) {
      const std::lock_guard<std::mutex> lk(mu);
      buf = std::move(free.back());
      free.pop_back();
    }
    for (int64_t i = lo; i < hi; ++i) run(views[order[size_t(i)]], false, buf);
    if (buf.defined()) {
      const std::lock_guard<std::mutex> lk(mu);
      free.push_back(std::move(buf));
    }
  });
  scope.set_work(work);
}

// What the forward saves for the backward: the detached operands, the pre-activation h
// [M, f] (undefined when it is recomputed), the chunks and which gradients are wanted.
struct FfnSaved {
  Tensor x, w1, b1, w2, h, index;
  std::vector<ChunkView> views;
  UnaryOp act;
  int64_t d, f, e;
  DType ct;  // the biases' dtype
  bool need_x, need_w1, need_b1, need_w2, need_b2;
  bool recompute, tasks;
  ScratchSpec h_rows;  // the chunks' h, when recomputed
};

// The gradients of x, w1, b1, w2 and b2 from gr = {dy}, chunk by chunk with the
// forward's chunks. Memory: dy and h are dropped after their last use (h only when it
// dies with this call), so that neither is alive when dX is gathered into dx; every
// result is made when first written; dh goes over h and dx's rows over dy's where they
// are dead.
std::vector<Tensor> ffn_backward(FfnSaved& s, std::vector<Tensor> gr) {
  const Device dv = s.x.device();
  const DType dt = s.x.dtype();
  const int64_t M = s.views.empty() ? 0 : s.views.back().c.r1, G = s.w1.size(0), X = s.x.size(0);
  const int64_t d = s.d, f = s.f, e = s.e;
  const bool nx = s.need_x, recompute = s.recompute;
  Tensor& h = s.h;
  Tensor dy = gr[0].to(dt).contiguous();
  gr.clear();
  const bool expire = autograd::saved_tensors_expire();
  // Results are made when first written, so that no buffer is alive before it must be
  // (all at once before chunks run as tasks, which must not race to make them).
  struct Result {
    bool need;
    Shape shape;
    DType type;
  };
  const Result spec[6] = {{nx, {X, d}, dt},           {s.need_w1, {G, d, f}, dt}, {s.need_b1, {G, f}, s.ct},
                          {s.need_w2, {G, f, e}, dt}, {s.need_b2, {G, e}, s.ct},  {nx, {M, d}, dt}};
  std::vector<Tensor> res(6);  // dx, dw1, db1, dw2, db2, and dx's rows in slot order
  // dx's rows go over dy's ([M, d] both, d = e): each chunk's dy rows are dead once its
  // dh is made, before its dX GEMM writes them. Only into a dy nothing else holds.
  if (nx && e == d && dy.is_sole_owner()) res[5] = dy;
  auto make = [&](size_t i) -> const Tensor& {
    if (spec[i].need && !res[i].defined()) res[i] = Tensor::empty(spec[i].shape, {spec[i].type, dv});
    return res[i];
  };
  if (s.tasks)
    for (size_t i = 1; i < 6; ++i) make(i);
  for_chunks(s.views, s.tasks, dv, s.h_rows,
             [&](const ChunkView& v, ChunkStep step, const ChunkKernels& k, const Tensor& scratch) {
               const Chunk& c = v.c;
               const bool last = step.last;
               Tensor hc = recompute ? scratch : rows_of(h, c), dyc = rows_of(dy, c);
               if (recompute)  // the forward's first GEMM again, to the same bits
                 k.gemm_call(v.args, v.x, groups_of(s.w1, c), v.offsets, v.index, Tensor(), groups_of(s.b1, c), hc);
               if (s.need_w2 || s.need_b2) {  // the activation, recomputed while packing, only for dW2
                 GroupedGemmArgs a = v.gemm_args(f, e, false);
                 a.x_act = s.act;
                 a.accumulate = step.continues;
                 k.dw_call(a, hc, Tensor(), dyc, v.offsets, groups_of(make(3), c), groups_of(make(4), c));
               }
               if (!(nx || s.need_w1 || s.need_b1)) return;
               // dh = (dy W2^T) * act'(h), over h itself when h dies with this call (no
               // retain_graph; h is not read after this) or is this chunk's recomputed rows,
               // else over a copy of h.
               GroupedGemmArgs a = v.gemm_args(e, f, true);
               a.out_act_grad = s.act;
               Tensor dh = expire || recompute ? hc : hc.clone();
               k.gemm_call(a, dyc, groups_of(s.w2, c), v.offsets, Tensor(), Tensor(), Tensor(), dh);
               if (last) dy = dyc = Tensor();
               if (s.need_w1 || s.need_b1) {
                 GroupedGemmArgs a1 = v.args;
                 a1.accumulate = step.continues;
                 k.dw_call(a1, v.x, v.index, dh, v.offsets, groups_of(make(1), c), groups_of(make(2), c));
               }
               if (nx)
                 k.gemm_call(v.gemm_args(f, d, true), dh, groups_of(s.w1, c), v.offsets, Tensor(), Tensor(), Tensor(),
                             rows_of(make(5), c));
               if (last && expire) h = hc = dh = Tensor();
             });
  for (size_t i = 1; i < 6; ++i) make(i);  // G = 0: no chunk wrote them
  dy = Tensor();
  if (expire) h = Tensor();  // (tasks have no last chunk to drop it)
  if (nx) {
    if (s.index.defined()) {
      scatter_rows_stub.get(dv)(res[5], s.index, Tensor(), make(0));
    } else {
      res[0] = res[5];
    }
  }
  res.pop_back();
  return res;
}

// Checks grouped_ffn's arguments; returns M, the rows of the output.
int64_t check_ffn_args(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                       const Tensor& offsets, const Tensor& index, UnaryOp act, int64_t chunk_rows) {
  HMOE_CHECK(x.defined() && w1.defined() && w2.defined() && x.dim() == 2 && w1.dim() == 3 && w2.dim() == 3 &&
                 is_floating(x.dtype()) && w1.dtype() == x.dtype() && w2.dtype() == x.dtype() &&
                 x.size(1) == w1.size(1) && w2.size(0) == w1.size(0) && w2.size(1) == w1.size(2),
             "grouped_ffn: x ", meta(x), ", w1 ", meta(w1), " and w2 ", meta(w2),
             " must be float [X, d], [G, d, f] and [G, f, e] of one dtype");
  const int64_t G = w1.size(0), f = w1.size(2), e = w2.size(2);
  HMOE_CHECK(!b1.defined() || (b1.shape() == Shape{G, f} && is_floating(b1.dtype())),
             "grouped_ffn: b1 must be float [G, f] = [", G, ", ", f, "], got ", meta(b1));
  HMOE_CHECK(!b2.defined() || (b2.shape() == Shape{G, e} && is_floating(b2.dtype())),
             "grouped_ffn: b2 must be float [G, e] = [", G, ", ", e, "], got ", meta(b2));
  HMOE_CHECK(act == UnaryOp::relu || act == UnaryOp::gelu_erf || act == UnaryOp::gelu_tanh || act == UnaryOp::silu,
             "grouped_ffn: the activation must be relu, gelu (erf or tanh) or silu, got UnaryOp ", int(act));
  HMOE_CHECK(chunk_rows >= 0, "grouped_ffn: chunk_rows must be >= 0 (0: the device's default), got ", chunk_rows);
  const int64_t M = check_group_offsets("grouped_ffn", offsets, G);
  HMOE_CHECK(index.defined() || x.size(0) == M, "grouped_ffn: offsets must run from 0 to M = ", x.size(0),
             " (rows of x, no index given), got offsets[G] = ", M);
  return M;
}

}  // namespace

Tensor grouped_ffn(const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in, const Tensor& w2_in,
                   const Tensor& b2_in, const Tensor& offsets, const Tensor& index_in, UnaryOp act, int64_t chunk_rows,
                   bool recompute, GroupedGemmBackend backend) {
  const int64_t M = check_ffn_args(x_in, w1_in, b1_in, w2_in, b2_in, offsets, index_in, act, chunk_rows);
  const int64_t G = w1_in.size(0), d = w1_in.size(1), f = w1_in.size(2), e = w2_in.size(2);
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
  // Chunks of whole groups (any chunking gives the same bits). On the CPU, with groups
  // enough to keep the threads evenly busy, every group is a chunk run as a task, its GEMMs
  // on one thread (faster than sharing each GEMM's tiles out, and one group's temporaries
  // per thread). Otherwise chunks run in order, the GEMMs' tiles shared: by default all
  // rows in one chunk, as the kernels make no [rows, f] temporary (dh goes over h), or
  // when recomputing (h is then made one chunk at a time) about a quarter of them.
  const bool tasks = chunk_rows == 0 && dev.is_cpu() && G >= 2 * int64_t(num_threads());
  const int64_t budget = chunk_rows > 0 ? chunk_rows
                         : tasks        ? 1
                         : recompute    ? std::max<int64_t>((M + 3) / 4, 1)
                                        : std::max<int64_t>(M, 1);

  auto det = [](const Tensor& t) { return t.defined() ? t.detach() : t; };
  FfnSaved s{.x = x.detach(),
             .w1 = w1.detach(),
             .b1 = det(b1),
             .w2 = w2.detach(),
             .h = Tensor(),
             .index = index,
             .views = {},
             .act = act,
             .d = d,
             .f = f,
             .e = e,
             .ct = ct,
             .need_x = x.requires_grad(),
             .need_w1 = w1.requires_grad(),
             .need_b1 = b1.defined() && b1.requires_grad(),
             .need_w2 = w2.requires_grad(),
             .need_b2 = b2.defined() && b2.requires_grad(),
             .recompute = recompute,
             .tasks = tasks,
             .h_rows = {recompute ? f : 0, {dt, dev}}};
  const Tensor b2d = det(b2);
  // The activation is fused into the GEMMs around it (read as act(h) while packing A,
  // dh made in the epilogue over h): no [M, f] buffer besides h, one pass over it less.
  Tensor y = Tensor::empty({M, e}, {dt, dev});
  for (const Chunk& c : make_chunks(off.data_ptr<int64_t>(), G, budget))
    s.views.emplace_back(c, off.data_ptr<int64_t>(), d, f, s.x, index, backend);
  // The pre-activation, saved whole for the backward unless it is recomputed there.
  if (!recompute) s.h = Tensor::empty({M, f}, {dt, dev});
  // The chunks' pre-activation, when not kept. In f32 on the CPU (whose f32 kernel sums a
  // weight gradient over parts of the rows to the bits of one sum) a task's h is at most
  // 2 MiB: the pool hands out memory in 2 MiB units, and a larger h per thread would cost
  // the step new segments where 2 MiB blocks the step frees serve it.
  if (recompute && tasks && dt == DType::f32)
    s.h_rows.most_rows = std::max<int64_t>(64, (int64_t(2) << 20) / (f * int64_t(sizeof(float))));
  for_chunks(s.views, tasks, dev, s.h_rows,
             [&](const ChunkView& v, ChunkStep, const ChunkKernels& k, const Tensor& scratch) {
               const Chunk& c = v.c;
               const Tensor hc = recompute ? scratch : rows_of(s.h, c);
               k.gemm_call(v.args, v.x, groups_of(s.w1, c), v.offsets, v.index, Tensor(), groups_of(s.b1, c), hc);
               GroupedGemmArgs a2 = v.gemm_args(f, e, false);
               a2.x_act = act;
               k.gemm_call(a2, hc, groups_of(s.w2, c), v.offsets, Tensor(), Tensor(), groups_of(b2d, c), rows_of(y, c));
             });
  autograd::record("grouped_ffn", {x, w1, b1, w2, b2}, {y},
                   [s = std::move(s)](std::vector<Tensor> gr) mutable { return ffn_backward(s, std::move(gr)); });
  return y;
}

}  // namespace hmoe::moe
