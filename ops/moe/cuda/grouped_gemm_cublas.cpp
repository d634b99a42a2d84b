// cuBLAS's grouped GEMM as the grouped GEMM family's second backend on the cuda device,
// and auto's per-shape choice (ops/moe/cuda/grouped_gemm_cublas.h). What hmoe's kernels
// fuse runs here as passes of its own around one cublasGemmGroupedBatchedEx call: the
// gather (the permute kernel), the FFN's activation of x (the unary kernel), bias and
// scale (in the compute dtype, rounded once), the FFN's dh (the unary backward kernel
// over the pre-activation). No pass waits on the host.
#include "ops/moe/cuda/grouped_gemm_cublas.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <string>
#include <vector>

#include "engine/cuda/blas.h"
#include "engine/cuda/runtime.h"
#include "engine/cuda/tuning.h"
#include "engine/error.h"
#include "ops/elementwise_kernels.h"

namespace hmoe::ops::cuda {
namespace {

using moe::GroupedGemmArgs;
using moe::GroupedGemmBackend;
namespace blas = hmoe::cuda::blas;

bool cublas_dtype(DType dt) { return dt == DType::f32 || dt == DType::bf16 || dt == DType::f16; }

void check_cublas_dtype(const char* op, DType dt) {
  HMOE_CHECK(cublas_dtype(dt), op, " (cublas backend): cuBLAS's grouped GEMM takes f32, bf16 or f16, got ",
             dtype_name(dt), "; the hmoe backend takes it");
}

// The address of element `elems` of a contiguous tensor (elems 0 of an empty one: its
// pointer, never read).
void* at(const Tensor& t, int64_t elems) {
  return static_cast<char*>(t.data_ptr<void>()) + size_t(elems) * t.element_size();
}

// The A operand hmoe's kernels read through the gather and the activation, made whole:
// [rows, k], row r = xrow(r) (zero for index -1), act applied when x_act is set.
Tensor a_rows(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index) {
  const Device dev = x.device();
  Tensor xa = x;
  if (index.defined()) {
    // The permute kernel takes f32 / f64: half rows go through f32, exactly both ways.
    const DType pt = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
    xa = Tensor::empty({a.rows, a.k}, {pt, dev});
    moe::permute_rows_stub.get(dev)(x.to(pt), index, 1, Tensor(), xa);
    xa = xa.to(x.dtype());
  }
  if (a.x_act) {
    const Tensor t = Tensor::empty(xa.shape(), {x.dtype(), dev});
    unary_stub.get(dev)(*a.x_act, xa, t, 0, 0);
    xa = t;
  }
  return xa;
}

// out = scale * (xrow W_g + bias_g), or with out_act_grad out = (xrow op(W_g)) * act'(out).
void forward_cublas(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                    const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out) {
  const DType dt = out.dtype();
  check_cublas_dtype("grouped_gemm", dt);
  if (a.rows == 0 || a.n == 0) return;
  const Device dev = out.device();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const Tensor xa = a_rows(a, x, index);
  const bool epilogue = scale.defined() || bias.defined() || a.out_act_grad.has_value();
  const Tensor c = epilogue ? Tensor::empty({a.rows, a.n}, {dt, dev}) : out;
  blas::GroupedGemm g{.dtype = dt, .trans_b = a.trans_w};
  for (int64_t i = 0; i < a.groups; ++i)
    if (off[i + 1] > off[i])
      g.problems.push_back({.m = off[i + 1] - off[i],
                            .n = a.n,
                            .k = a.k,
                            .lda = std::max<int64_t>(a.k, 1),
                            .ldb = std::max<int64_t>(a.trans_w ? a.k : a.n, 1),
                            .ldc = a.n,
                            .a = at(xa, off[i] * a.k),
                            .b = at(w, i * a.k * a.n),
                            .c = at(c, off[i] * a.n)});
  blas::grouped_gemm(g, hmoe::cuda::current_stream(dev.index));
  if (!epilogue) return;
  if (a.out_act_grad) return unary_backward_stub.get(dev)(*a.out_act_grad, out, c, out, 0, 0);
  // In the compute dtype of scale and bias (f32 for half types), rounded to out's once;
  // the bias added group by group (no row-to-group table to upload).
  Tensor y = c.to(scale.defined() ? scale.dtype() : bias.dtype());
  if (bias.defined())
    for (int64_t i = 0; i < a.groups; ++i)
      if (off[i + 1] > off[i]) add_(y.narrow(0, off[i], off[i + 1] - off[i]), bias.narrow(0, i, 1));
  if (scale.defined()) y = mul(y, scale.unsqueeze(1));
  Tensor(out).copy_(y);  // a handle to out's memory
}

// dw_g = xrow(rows of g)^T dy(rows of g); an empty group's dw_g is cleared (k = 0).
void dw_cublas(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy, const Tensor& offsets,
               const Tensor& dw) {
  const DType dt = dy.dtype();
  check_cublas_dtype("grouped_gemm backward (dW)", dt);
  if (a.k == 0 || a.n == 0) return;
  const int64_t* off = offsets.data_ptr<int64_t>();
  const Tensor xa = a.rows > 0 ? a_rows(a, x, index) : x;
  blas::GroupedGemm g{.dtype = dt, .trans_a = true};
  for (int64_t i = 0; i < a.groups; ++i)
    g.problems.push_back({.m = a.k,
                          .n = a.n,
                          .k = off[i + 1] - off[i],
                          .lda = a.k,
                          .ldb = a.n,
                          .ldc = a.n,
                          .a = at(xa, off[i] * a.k),
                          .b = at(dy, off[i] * a.n),
                          .c = at(dw, i * a.k * a.n)});
  blas::grouped_gemm(g, hmoe::cuda::current_stream(dy.device().index));
}

// The shape class auto decides per: what is computed, its dtype and sizes, rows rounded
// up to a power of two.
std::string shape_key(const char* what, const GroupedGemmArgs& a, DType dt, bool index, bool scale, bool bias) {
  std::string key = std::string(what) + " " + std::string(dtype_name(dt)) + " G=" + std::to_string(a.groups) +
                    " k=" + std::to_string(a.k) + " n=" + std::to_string(a.n) + " rows<2^" +
                    std::to_string(std::bit_width(uint64_t(a.rows)));
  if (a.trans_w) key += " w^T";
  if (index) key += " gather";
  if (scale) key += " scale";
  if (bias) key += " bias";
  if (a.x_act) key += " x_act=" + std::to_string(int(*a.x_act));
  if (a.out_act_grad) key += " act_grad=" + std::to_string(int(*a.out_act_grad));
  return key;
}

// Median milliseconds of three calls after an untimed one (CUDA events on the current
// stream), each call on a target fresh() made before its timing starts.
double time_ms(int device, const std::function<Tensor()>& fresh, const std::function<void(const Tensor&)>& run) {
  hmoe::cuda::Stream& s = hmoe::cuda::current_stream(device);
  run(fresh());
  std::vector<float> ms;
  for (int i = 0; i < 3; ++i) {
    const Tensor t = fresh();
    hmoe::cuda::Event start(device), end(device);
    start.record(s);
    run(t);
    end.record(s);
    end.synchronize();
    ms.push_back(start.elapsed_ms(end));
  }
  std::sort(ms.begin(), ms.end());
  return ms[1];
}

// Whether this call runs on cuBLAS: forced, or auto's choice for its shape class on a
// real GPU (measured now, both ways, when the device has none recorded for it).
bool use_cublas(GroupedGemmBackend backend, DType dt, int64_t rows, int device, const std::string& key,
                const std::function<double()>& time_hmoe, const std::function<double()>& time_cublas) {
  if (backend == GroupedGemmBackend::cublas) return true;
  if (hmoe::cuda::is_emulated() || !cublas_dtype(dt) || rows == 0) return false;
  if (const std::optional<int> c = hmoe::cuda::measured_choice(device, key)) return *c == 1;
  const double ours = time_hmoe(), theirs = time_cublas();
  return hmoe::cuda::record_choice(device, key, theirs < ours ? 1 : 0) == 1;
}

}  // namespace

void grouped_gemm_peer(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                       const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out,
                       moe::GroupedGemmKernel hmoe) {
  GroupedGemmArgs ours = a;
  ours.backend = GroupedGemmBackend::hmoe;
  const DType dt = out.dtype();
  const int device = out.device().index;
  auto run_hmoe = [&](const Tensor& o) { hmoe(ours, x, w, offsets, index, scale, bias, o); };
  auto run_cublas = [&](const Tensor& o) { forward_cublas(a, x, w, offsets, index, scale, bias, o); };
  // With out_act_grad, out holds the pre-activation on entry: each timed call gets a copy.
  auto fresh = [&] { return a.out_act_grad ? out.clone() : Tensor::empty(out.shape(), {dt, out.device()}); };
  const std::string key = shape_key("forward", a, dt, index.defined(), scale.defined(), bias.defined());
  if (use_cublas(
          a.backend, dt, a.rows, device, key, [&] { return time_ms(device, fresh, run_hmoe); },
          [&] { return time_ms(device, fresh, run_cublas); }))
    run_cublas(out);
  else
    run_hmoe(out);
}

void grouped_gemm_dw_peer(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                          const Tensor& offsets, const Tensor& dw, const Tensor& db, moe::GroupedGemmDwKernel hmoe) {
  GroupedGemmArgs ours = a;
  ours.backend = GroupedGemmBackend::hmoe;
  if (dw.defined()) {
    const DType dt = dy.dtype();
    const int device = dy.device().index;
    auto run_hmoe = [&](const Tensor& t) { hmoe(ours, x, index, dy, offsets, t, Tensor()); };
    auto run_cublas = [&](const Tensor& t) { dw_cublas(a, x, index, dy, offsets, t); };
    auto fresh = [&] { return Tensor::empty(dw.shape(), {dt, dw.device()}); };
    const std::string key = shape_key("dW", a, dt, index.defined(), false, false);
    if (use_cublas(
            a.backend, dt, a.rows, device, key, [&] { return time_ms(device, fresh, run_hmoe); },
            [&] { return time_ms(device, fresh, run_cublas); }))
      run_cublas(dw);
    else
      run_hmoe(dw);
  }
  if (db.defined()) hmoe(ours, x, index, dy, offsets, Tensor(), db);
}

}  // namespace hmoe::ops::cuda
