// The grouped GEMM family on the cuda device (contract: ops/moe/moe_kernels.h, reference:
// ops/moe/cpu/grouped_gemm.cpp): one launch for all groups (a flat tile index mapped to
// (group, row block, column block) through a per-call group table built on the host from
// the host-readable offsets), the gather and the FFN's activation (x_act) fused into the
// A-panel loads, scale and bias (or the FFN's dh, out_act_grad) in the epilogue;
// bf16/f16 on tensor cores (WMMA, f32 accumulate), f32/f64 on CUDA cores.
// dW reduces each group's rows in one block per output tile (no split, fixed order); db,
// the scale gradient and the dX scatter are deterministic too (no float atomics).
// dtypes: x, w, dy, out, dw in T; scale, bias, db and the row dot in T's compute type
// (f32 for bf16/f16, T otherwise); index i64.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/dispatch.h"
#include "ops/moe/cuda/grouped_gemm.cuh"
#include "ops/moe/cuda/grouped_gemm_cublas.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cuda {
namespace {

using moe::GroupedGemmArgs;
namespace mg = moe_gemm;

template <typename T>
constexpr bool kTensorCore = !std::is_same_v<T, float> && !std::is_same_v<T, double>;

DType compute_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

device::Stream stream_of(int device) {
  return static_cast<device::Stream>(hmoe::cuda::current_stream(device).native());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned grid_of(int64_t tiles) { return unsigned(std::clamp<int64_t>(tiles, 1, 0x7fffffff)); }

// Every check that keeps the kernels inside their buffers (the op checks these too; the
// kernels trust index values, which the op validates).
void check_args(const char* op, const GroupedGemmArgs& a, const Tensor& offsets,
                std::initializer_list<const Tensor*> ts) {
  HMOE_CHECK(offsets.defined() && offsets.device().is_cpu() && offsets.dtype() == DType::i64 && offsets.dim() == 1 &&
                 offsets.numel() == a.groups + 1 && offsets.is_contiguous(),
             op, ": offsets must be a contiguous cpu i64 [G + 1 = ", a.groups + 1, "] tensor");
  constexpr int64_t kMax = (int64_t(1) << 31) - 1024;  // the kernels count rows and columns in 32 bits
  HMOE_CHECK(a.rows < kMax && a.x_rows < kMax && a.k < kMax && a.n < kMax, op, ": M = ", a.rows,
             ", rows of x = ", a.x_rows, ", k = ", a.k, ", n = ", a.n,
             " must each be below 2^31 - 1024 for the cuda kernels");
  const int64_t* o = offsets.data_ptr<int64_t>();
  HMOE_CHECK(o[0] == 0 && o[a.groups] == a.rows, op, ": offsets must run from 0 to M = ", a.rows);
  for (int64_t g = 0; g < a.groups; ++g) HMOE_CHECK(o[g + 1] >= o[g], op, ": offsets must not decrease");
  for (const Tensor* t : ts)
    if (t->defined())
      HMOE_CHECK(t->device().is_cuda() && t->is_contiguous(), op, ": ", t->meta_str(),
                 " must be a contiguous tensor on the cuda device");
}

// A fused activation step of the args (GroupedGemmArgs::x_act / out_act_grad) as the
// kernels' argument; the ops the cpu kernels fuse, and no other.
mg::FusedAct fused_act(const char* op, const char* what, const std::optional<UnaryOp>& act) {
  if (!act) return mg::FusedAct::none;
  switch (*act) {
    case UnaryOp::relu:
      return mg::FusedAct::relu;
    case UnaryOp::gelu_erf:
      return mg::FusedAct::gelu_erf;
    case UnaryOp::gelu_tanh:
      return mg::FusedAct::gelu_tanh;
    case UnaryOp::silu:
      return mg::FusedAct::silu;
    default:
      HMOE_FAIL(op, ": ", what, " must be relu, gelu_erf, gelu_tanh or silu, got UnaryOp ", int(*act));
  }
}

void check_shape(const char* op, const Tensor& t, const Shape& want, DType dt, const char* what) {
  if (!t.defined()) return;
  HMOE_CHECK(t.shape() == want && t.dtype() == dt, op, ": ", what, " must be ", dtype_name(dt), " ", shape_str(want),
             ", got ", t.meta_str());
}

// Row blocks of every group for a BM-row tile, as a prefix over groups.
std::vector<int64_t> block_prefix(const int64_t* off, int64_t groups, int64_t bm) {
  std::vector<int64_t> p(size_t(groups) + 1, 0);
  for (int64_t g = 0; g < groups; ++g) p[size_t(g) + 1] = p[size_t(g)] + ceil_div(off[g + 1] - off[g], bm);
  return p;
}

// The group table on the device: offsets then the blocks array, uploaded on the current
// stream (a pageable-memory copy: the source is consumed before memcpy_async returns),
// owned by a tensor the caching allocator keeps ordered with the launches after it.
struct DeviceTable {
  Tensor buf;
  mg::GroupTable tab{};
};
DeviceTable upload(const int64_t* off, int64_t groups, const std::vector<int64_t>& blocks, int64_t m_blocks,
                   int64_t n_blocks, int64_t tiles, int device) {
  std::vector<int64_t> h(off, off + groups + 1);
  h.insert(h.end(), blocks.begin(), blocks.end());
  DeviceTable d;
  d.buf = Tensor::empty({int64_t(h.size())}, {DType::i64, Device::cuda(device)});
  auto* p = static_cast<int64_t*>(d.buf.data_ptr<void>());
  hmoe::cuda::memcpy_async(p, h.data(), h.size() * sizeof(int64_t), hmoe::cuda::CopyKind::host_to_device,
                           hmoe::cuda::current_stream(device));
  d.tab = {p, p + groups + 1, groups, m_blocks, n_blocks, tiles};
  return d;
}

// ---- forward -------------------------------------------------------------------------

template <typename T>
void forward_typed(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const int64_t* off, const Tensor& index,
                   const Tensor& scale, const Tensor& bias, const Tensor& out, mg::FusedAct x_act,
                   mg::FusedAct act_grad) {
  using D = device_elem_t<T>;
  using C = compute_t<T>;
  const int device = out.device().index;
  const int64_t k = a.k, n = a.n;
  const D* xp = data_or_null<const D>(x);
  const D* wp = data_or_null<const D>(w);
  D* op = data_or_null<D>(out);
  const int64_t* ix = data_or_null<const int64_t>(index);
  const C* sp = data_or_null<const C>(scale);
  const C* bp = data_or_null<const C>(bias);
  constexpr int V = 16 / int(sizeof(D));
  const bool vec = aligned_to(xp, 16) && aligned_to(wp, 16) && k % V == 0 && (a.trans_w ? k : n) % V == 0;
  const bool vec_out = aligned_to(op, 16) && n % V == 0;
  auto run = [&]<int BM, int BN, size_t SMEM, typename K>(const char* name, K kernel) {
    const std::vector<int64_t> blocks = block_prefix(off, a.groups, BM);
    const int64_t nb = ceil_div(n, BN), tiles = blocks.back() * nb;
    if (tiles == 0) return;
    const DeviceTable t = upload(off, a.groups, blocks, 0, nb, tiles, device);
    hmoe::cuda::launch_checked(name, kernel, grid_of(tiles), 256, SMEM, stream_of(device), t.tab, xp, ix, wp, sp, bp, op, k, n, vec_out, x_act,
           act_grad);
  };
  if constexpr (kTensorCore<T>) {
    // 128-row tiles unless they pad the groups by more than 1/8 over 64-row ones; the
    // fused activation steps run on 64-row tiles (with 128 rows their registers spill).
    const bool fused = x_act != mg::FusedAct::none || act_grad != mg::FusedAct::none;
    const std::vector<int64_t> p64 = block_prefix(off, a.groups, 64), p128 = block_prefix(off, a.groups, 128);
    const bool large = vec && !fused && p128.back() * 128 * 8 <= p64.back() * 64 * 9;
    // 16-byte-aligned operands: ldmatrix + mma.sync over swizzled panels; else WMMA over
    // element-loaded padded panels.
    auto go = [&]<typename Cfg, bool TR, int VV, bool ACT>() {
      if constexpr (VV > 1)
        run.template operator()<Cfg::BM, Cfg::BN, mg::MmaSyncSmem<Cfg, TR>::bytes>(
            "grouped_gemm_mma_sync", &mg::grouped_gemm_mma_sync<D, Cfg, TR, ACT>);
      else
        run.template operator()<Cfg::BM, Cfg::BN, mg::MmaSmem<Cfg, true, TR>::bytes>(
            "grouped_gemm_wmma", &mg::grouped_gemm_wmma<D, Cfg, TR, VV, ACT>);
    };
    auto small = [&]<bool TR, int VV>() {
      fused ? go.template operator()<mg::MmaSmall, TR, VV, true>()
            : go.template operator()<mg::MmaSmall, TR, VV, false>();
    };
    if (large)
      a.trans_w ? go.template operator()<mg::MmaLarge, true, V, false>()
                : go.template operator()<mg::MmaLarge, false, V, false>();
    else if (vec)
      a.trans_w ? small.template operator()<true, V>() : small.template operator()<false, V>();
    else
      a.trans_w ? small.template operator()<true, 1>() : small.template operator()<false, 1>();
  } else {
    using Cfg = mg::SimtCfg<D>;
    auto go = [&]<bool TR, int VV>() {
      run.template operator()<Cfg::BM, Cfg::BN, mg::SimtSmem<D>::bytes>("grouped_gemm_simt",
                                                                        &mg::grouped_gemm_simt<D, TR, VV>);
    };
    if (vec)
      a.trans_w ? go.template operator()<true, V>() : go.template operator()<false, V>();
    else
      a.trans_w ? go.template operator()<true, 1>() : go.template operator()<false, 1>();
  }
}

void grouped_gemm_cuda(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                       const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out) {
  constexpr const char* op = "grouped_gemm";
  check_args(op, a, offsets, {&x, &w, &index, &scale, &bias, &out});
  const DType dt = x.dtype(), ct = compute_dtype(dt);
  check_shape(op, x, {index.defined() ? a.x_rows : a.rows, a.k}, dt, "x");
  check_shape(op, w, a.trans_w ? Shape{a.groups, a.n, a.k} : Shape{a.groups, a.k, a.n}, dt, "w");
  check_shape(op, out, {a.rows, a.n}, dt, "out");
  check_shape(op, index, {a.rows}, DType::i64, "index");
  check_shape(op, scale, {a.rows}, ct, "scale");
  check_shape(op, bias, {a.groups, a.n}, ct, "bias");
  const mg::FusedAct x_act = fused_act(op, "x_act", a.x_act), act_grad = fused_act(op, "out_act_grad", a.out_act_grad);
  HMOE_CHECK(act_grad == mg::FusedAct::none || (!scale.defined() && !bias.defined()), op,
             ": out_act_grad needs an FFN activation and no scale or bias");
  if (a.backend != moe::GroupedGemmBackend::hmoe)  // cuBLAS, or auto's choice
    return grouped_gemm_peer(a, x, w, offsets, index, scale, bias, out, &grouped_gemm_cuda);
  if (a.rows == 0 || a.n == 0) return;
  const int64_t* off = offsets.data_ptr<int64_t>();
  detail::dispatch_float(
      dt, op, [&]<typename T>() { forward_typed<T>(a, x, w, off, index, scale, bias, out, x_act, act_grad); });
}

// ---- dW, db --------------------------------------------------------------------------

template <typename T>
void dw_typed(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy, const int64_t* off,
              const Tensor& dw, const Tensor& db, mg::FusedAct x_act) {
  using D = device_elem_t<T>;
  using C = compute_t<T>;
  const int device = dy.device().index;
  const int64_t G = a.groups, k = a.k, n = a.n;
  const D* xp = data_or_null<const D>(x);
  const D* yp = data_or_null<const D>(dy);
  const int64_t* ix = data_or_null<const int64_t>(index);
  if (dw.defined() && k > 0 && n > 0) {
    // Groups by decreasing row count (ties in group order): the longest reductions first.
    std::vector<int64_t> order(static_cast<size_t>(G));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t u, int64_t v) { return off[u + 1] - off[u] > off[v + 1] - off[v]; });
    D* wp = data_or_null<D>(dw);
    constexpr int V = 16 / int(sizeof(D));
    const bool vec = aligned_to(xp, 16) && aligned_to(yp, 16) && k % V == 0 && n % V == 0;
    const bool vec_out = aligned_to(wp, 16) && n % V == 0;
    auto run = [&]<int BM, int BN, size_t SMEM, typename K>(const char* name, K kernel) {
      const int64_t mb = ceil_div(k, BM), nb = ceil_div(n, BN), tiles = G * mb * nb;
      const DeviceTable t = upload(off, G, order, mb, nb, tiles, device);
      hmoe::cuda::launch_checked(name, kernel, grid_of(tiles), 256, SMEM, stream_of(device), t.tab, xp, ix, yp, wp, k, n, vec_out, x_act);
    };
    if constexpr (kTensorCore<T>) {
      using Cfg = mg::MmaLarge;
      constexpr size_t smem = mg::MmaSmem<Cfg, false, false>::bytes;
      if (vec)
        run.template operator()<Cfg::BM, Cfg::BN, smem>("grouped_dw_wmma", &mg::grouped_dw_wmma<D, V>);
      else
        run.template operator()<Cfg::BM, Cfg::BN, smem>("grouped_dw_wmma", &mg::grouped_dw_wmma<D, 1>);
    } else {
      using Cfg = mg::SimtCfg<D>;
      constexpr size_t smem = mg::SimtSmem<D>::bytes;
      if (vec)
        run.template operator()<Cfg::BM, Cfg::BN, smem>("grouped_dw_simt", &mg::grouped_dw_simt<D, V>);
      else
        run.template operator()<Cfg::BM, Cfg::BN, smem>("grouped_dw_simt", &mg::grouped_dw_simt<D, 1>);
    }
  }
  if (db.defined() && n > 0 && G > 0) {
    const DeviceTable t = upload(off, G, {}, 0, 0, 0, device);
    auto grouped_db_kernel = &mg::grouped_db_kernel<D, C>;
    HMOE_LAUNCH_CHECKED(grouped_db_kernel, dim3(unsigned(ceil_div(n, 32)), unsigned(std::min<int64_t>(G, 65535))),
                        dim3(32, mg::kDbRows), 0, stream_of(device), t.tab.offsets, G, yp, data_or_null<C>(db), n);
  }
}

void grouped_gemm_dw_cuda(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                          const Tensor& offsets, const Tensor& dw, const Tensor& db) {
  constexpr const char* op = "grouped_gemm backward (dW)";
  check_args(op, a, offsets, {&x, &index, &dy, &dw, &db});
  HMOE_CHECK(!a.accumulate, op, ": accumulate (adding to dw and db) is a CPU kernel's option, not the cuda device's");
  const DType dt = dy.dtype(), ct = compute_dtype(dt);
  check_shape(op, x, {index.defined() ? a.x_rows : a.rows, a.k}, dt, "x");
  check_shape(op, dy, {a.rows, a.n}, dt, "dy");
  check_shape(op, index, {a.rows}, DType::i64, "index");
  check_shape(op, dw, {a.groups, a.k, a.n}, dt, "dw");
  check_shape(op, db, {a.groups, a.n}, ct, "db");
  const int64_t* off = offsets.data_ptr<int64_t>();
  const mg::FusedAct x_act = fused_act(op, "x_act", a.x_act);
  if (a.backend != moe::GroupedGemmBackend::hmoe)  // cuBLAS, or auto's choice
    return grouped_gemm_dw_peer(a, x, index, dy, offsets, dw, db, &grouped_gemm_dw_cuda);
  detail::dispatch_float(dt, op, [&]<typename T>() { dw_typed<T>(a, x, index, dy, off, dw, db, x_act); });
}

// ---- scale gradient ------------------------------------------------------------------

void grouped_row_dot_cuda(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& gx,
                          const Tensor& dy, const Tensor& bias, const Tensor& offsets, const Tensor& out) {
  constexpr const char* op = "grouped_gemm backward (dscale)";
  check_args(op, a, offsets, {&x, &index, &gx, &dy, &bias, &out});
  const DType dt = x.dtype(), ct = compute_dtype(dt);
  check_shape(op, x, {index.defined() ? a.x_rows : a.rows, a.k}, dt, "x");
  check_shape(op, gx, {a.rows, a.k}, dt, "gx");
  check_shape(op, index, {a.rows}, DType::i64, "index");
  check_shape(op, out, {a.rows}, ct, "out");
  if (bias.defined()) {
    check_shape(op, dy, {a.rows, a.n}, dt, "dy");
    check_shape(op, bias, {a.groups, a.n}, ct, "bias");
  }
  if (a.rows == 0) return;
  const int device = out.device().index;
  const int64_t* off = offsets.data_ptr<int64_t>();
  detail::dispatch_float(dt, op, [&]<typename T>() {
    using D = device_elem_t<T>;
    using C = compute_t<T>;
    const DeviceTable t = bias.defined() ? upload(off, a.groups, {}, 0, 0, 0, device) : DeviceTable{};
    auto grouped_row_dot_kernel = &mg::grouped_row_dot_kernel<D, C>;
    HMOE_LAUNCH_CHECKED(grouped_row_dot_kernel, flat_blocks(a.rows * 32, device), 256, 0, stream_of(device),
                        t.tab.offsets, a.groups, data_or_null<const D>(x), data_or_null<const int64_t>(index), data_or_null<const D>(gx),
                        bias.defined() ? data_or_null<const D>(dy) : nullptr, data_or_null<const C>(bias), data_or_null<C>(out), a.rows, a.k, a.n);
  });
}

// ---- dX scatter ----------------------------------------------------------------------

void scatter_rows_cuda(const Tensor& src, const Tensor& index, const Tensor& scale, const Tensor& out) {
  constexpr const char* op = "grouped_gemm backward (dX scatter)";
  HMOE_CHECK(src.defined() && out.defined() && index.defined() && src.dim() == 2 && out.dim() == 2 &&
                 src.size(1) == out.size(1) && src.dtype() == out.dtype(),
             op, ": src ", src.meta_str(), " and out ", out.meta_str(), " must be [R, k] and [rows, k] of one dtype");
  for (const Tensor* t : {&src, &index, &scale, &out})
    if (t->defined())
      HMOE_CHECK(t->device().is_cuda() && t->is_contiguous(), op, ": ", t->meta_str(),
                 " must be a contiguous tensor on the cuda device");
  const int64_t R = src.size(0), K = src.size(1), D = out.size(0);
  check_shape(op, index, {R}, DType::i64, "index");
  check_shape(op, scale, {R}, compute_dtype(src.dtype()), "scale");
  if (D == 0 || K == 0) return;
  HMOE_CHECK(R < (int64_t(1) << 32) - 1 && D < (int64_t(1) << 32) - 1, op,
             ": the cuda scatter packs rows and destinations in 32 bits each; got ", R, " rows and ", D,
             " destinations");
  const int device = out.device().index;
  const auto s = stream_of(device);
  const Tensor bufa = ixs::pack_buffer<uint64_t>(R, out.device()), bufb = ixs::pack_buffer<uint64_t>(R, out.device());
  uint64_t* pa = ixs::pack_ptr<uint64_t>(bufa);
  if (R > 0) {
    auto scatter_packs_kernel = &mg::scatter_packs_kernel;
    HMOE_LAUNCH_CHECKED(scatter_packs_kernel, flat_blocks(R, device), 256, 0, s, data_or_null<const int64_t>(index), R, pa);
  }
  const uint64_t* sorted = ixs::sort_segments<uint64_t>(pa, ixs::pack_ptr<uint64_t>(bufb), 1, R, device);
  detail::dispatch_float(src.dtype(), op, [&]<typename T>() {
    using Dv = device_elem_t<T>;
    using C = compute_t<T>;
    auto launch = [&]<int V>() {
      const int64_t packs = ceil_div(K, V);
      const unsigned threads = unsigned(std::clamp<int64_t>(ceil_div(packs, 32) * 32, 32, 256));
      const dim3 grid(unsigned(std::min<int64_t>(D, int64_t(hmoe::cuda::properties(device).multiprocessors) * 64)),
                      unsigned(std::min<int64_t>(ceil_div(packs, threads), 65535)));
      auto scatter_rows_kernel = &mg::scatter_rows_kernel<Dv, C, V>;
      HMOE_LAUNCH_CHECKED(scatter_rows_kernel, grid, threads, 0, s, data_or_null<const Dv>(src), data_or_null<const C>(scale), sorted, R, D, K,
                          data_or_null<Dv>(out));
    };
    constexpr int V = 16 / int(sizeof(Dv));
    if (K % V == 0 && aligned_to(src.data_ptr<void>(), 16) && aligned_to(out.data_ptr<void>(), 16))
      launch.template operator()<V>();
    else
      launch.template operator()<1>();
  });
}

}  // namespace

void register_moe_gemm_cuda() {
  moe::grouped_gemm_stub.set(DeviceType::cuda, &grouped_gemm_cuda);
  moe::grouped_gemm_dw_stub.set(DeviceType::cuda, &grouped_gemm_dw_cuda);
  moe::grouped_row_dot_stub.set(DeviceType::cuda, &grouped_row_dot_cuda);
  moe::scatter_rows_stub.set(DeviceType::cuda, &scatter_rows_cuda);
}

}  // namespace hmoe::ops::cuda
