// Token dispatch on the cuda device (contract: ops/moe/moe_kernels.h, reference:
// ops/moe/cpu/token_dispatch.cpp; kernel bodies in token_dispatch.cuh).
//
// The plan is a deterministic counting sort with no slot-claiming atomics:
//  - up to kFusedMaxRows routed rows: ONE launch, one block (histogram in shared memory,
//    padded exclusive scan, stable placement tile by tile with a running base): the
//    latency path (decode, small batches);
//  - more rows: three launches over tiles of at least 2048 rows (at most kMaxTiles tiles):
//    per-tile shared-memory histograms, one block scanning them (per group over the
//    tiles in order, then the padded scan over the groups), and per-tile placement from
//    those prefixes. Parallel where the work is, and the same answer as the fused path.
//    (Not one kernel: handing the histograms to a last block inside the launch needs
//    __threadfence, which the emulator's TSan build cannot compile or follow, and a
//    grid-wide wait would deadlock where blocks are not all resident.)
//  - more than kMaxCountGroups groups (their per-warp counters no longer fit in shared
//    memory: pattern plans over thousands of patterns): a device sort of (group, row)
//    packs, then counts by binary search, one scan block and a placement pass.
// Ids are validated on the device; the first bad position is read back and raised as
// hmoe::Error (one small read after the kernels; make_plan reads the offsets anyway).
// unique_patterns sorts (pattern, token) packs on the device, ranks the run heads with one
// scanning block, and reads back only the number of patterns to size its output.
#include <algorithm>
#include <cstdint>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/index_sort.cuh"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/moe/cuda/token_dispatch.cuh"
#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cuda {
namespace {

using namespace moe_dispatch;

const hmoe::cuda::Stream& stream_of(const Tensor& t) { return hmoe::cuda::current_stream(t.device().index); }

// ---- plan ------------------------------------------------------------------------------------

constexpr int64_t kFusedMaxRows = 4096;
constexpr int64_t kMaxCountGroups = 2048;
constexpr int64_t kMinTile = 2048;
constexpr int64_t kMaxTiles = 256;
constexpr size_t kSmemBudget = hmoe::cuda::kSmemWithoutOptIn;

// Warps (a power of two, 1..max_warps) whose placement (place_smem_bytes) fits the budget.
int warps_for(int64_t G, int max_warps) {
  int w = max_warps;
  while (w > 1 && place_smem_bytes(G, w) > kSmemBudget) w >>= 1;
  return w;
}

template <typename I>
void plan_counting(const I* ids, int64_t n, int G, int64_t pad, int64_t* counts, int64_t* offsets, int64_t* perm,
                   int64_t perm_len, int64_t* inverse, unsigned long long* flag, Device dev) {
  const auto& stream = hmoe::cuda::current_stream(dev.index);
  if (n <= kFusedMaxRows) {
    const int warps = warps_for(G, 16);
    const int64_t tile = int64_t(warps) * kPlaceRowsPerWarp;
    const size_t smem = place_smem_bytes(G, warps);
    auto k = &plan_fused_kernel<I>;
    HMOE_LAUNCH_CHECKED(k, 1, warps * 32, smem, stream.native(), ids, n, G, pad, tile, counts, offsets, perm, perm_len,
                        inverse, flag);
    return;
  }
  const int64_t tile = std::max(kMinTile, ((n + kMaxTiles - 1) / kMaxTiles + 255) / 256 * 256);
  const int ntiles = int((n + tile - 1) / tile);
  // Scratch: tile_counts and tile_prefix, int [ntiles][G] each.
  const int64_t cells = int64_t(ntiles) * G;
  const Tensor scratch = Tensor::empty({cells}, {DType::i64, dev});
  int* tile_counts = static_cast<int*>(scratch.data_ptr<void>());
  int* tile_prefix = tile_counts + cells;
  auto k1 = &plan_tile_counts_kernel<I>;
  HMOE_LAUNCH_CHECKED(k1, unsigned(ntiles), 256, size_t(G) * sizeof(int), stream.native(), ids, n, G, tile, tile_counts,
                      flag);
  HMOE_LAUNCH_CHECKED(plan_tile_scan_kernel, 1, 1024, size_t(G) * sizeof(int), stream.native(), tile_counts, ntiles, G,
                      pad, tile_prefix, counts, offsets, perm, perm_len);
  const int warps = warps_for(G, kPlaceThreads / 32);
  auto k2 = &plan_place_kernel<I>;
  HMOE_LAUNCH_CHECKED(k2, unsigned(ntiles), warps * 32, place_smem_bytes(G, warps), stream.native(), ids, n, G, tile,
                      int64_t(warps) * kPlaceRowsPerWarp, tile_prefix, offsets, perm, inverse, flag);
}

template <typename I>
void plan_sorted(const I* ids, int64_t n, int64_t G, int64_t pad, int64_t* counts, int64_t* offsets, int64_t* perm,
                 int64_t perm_len, int64_t* inverse, const ixs::DeviceFlag& flag, Device dev) {
  const auto& stream = hmoe::cuda::current_stream(dev.index);
  const int device = dev.index;
  const Tensor bufa = ixs::pack_buffer<uint64_t>(n, dev), bufb = ixs::pack_buffer<uint64_t>(n, dev);
  uint64_t* a = ixs::pack_ptr<uint64_t>(bufa);
  if (n > 0) {
    auto kp = &plan_packs_kernel<I>;
    HMOE_LAUNCH_CHECKED(kp, ixs::grid_for(n, device), 256, 0, stream.native(), ids, n, G, a, flag.ptr());
    if (flag.read() != kNoError) return;  // the caller raises it; nothing else may read bad packs
  }
  const uint64_t* sorted = ixs::sort_segments<uint64_t>(a, ixs::pack_ptr<uint64_t>(bufb), 1, n, device);
  HMOE_LAUNCH_CHECKED(plan_sorted_counts_kernel, ixs::grid_for(G, device), 256, 0, stream.native(), sorted, n, G,
                      counts);
  HMOE_LAUNCH_CHECKED(plan_scan_kernel, 1, 1024, 0, stream.native(), int(G), pad, counts, offsets, perm, perm_len);
  if (n > 0)
    HMOE_LAUNCH_CHECKED(plan_sorted_place_kernel, ixs::grid_for(n, device), 256, 0, stream.native(), sorted, n, offsets,
                        perm, inverse);
}

void plan_cuda(const Tensor& ids, int64_t G, int64_t pad, const Tensor& counts, const Tensor& offsets,
               const Tensor& perm, const Tensor& inverse) {
  const int64_t n = ids.numel();
  HMOE_CHECK(n < (int64_t(1) << 31) - 1 && G < (int64_t(1) << 31) - 1, "make_plan: the cuda plan counts ",
             "rows and groups in 32 bits; got ", n, " routed rows and ", G, " groups");
  const Device dev = ids.device();
  const ixs::DeviceFlag flag(dev);
  auto* cnt = static_cast<int64_t*>(counts.data_ptr<void>());
  auto* off = static_cast<int64_t*>(offsets.data_ptr<void>());
  auto* pm = static_cast<int64_t*>(perm.data_ptr<void>());
  auto* inv = static_cast<int64_t*>(inverse.data_ptr<void>());
  hmoe::detail::dispatch_index(ids.dtype(), "make_plan", [&]<typename I>() {
    const I* id = static_cast<const I*>(ids.data_ptr<void>());
    if (G <= kMaxCountGroups)
      plan_counting<I>(id, n, int(G), pad, cnt, off, pm, perm.numel(), inv, flag.ptr(), dev);
    else
      plan_sorted<I>(id, n, G, pad, cnt, off, pm, perm.numel(), inv, flag, dev);
  });
  const unsigned long long bad = flag.read();
  if (bad != kNoError)
    HMOE_FAIL("make_plan: id ", ixs::read_index_at(ids, int64_t(bad)), " at position ", int64_t(bad),
              " is out of range [0, ", G, ")");
}

// ---- permute, combine, gate gradient ----------------------------------------------------------

// Threads along a row (a power of two, 32..kRowBlock, V elements each) and rows per block (kRowBlock threads).
struct RowShape {
  unsigned tx, ty, blocks;
};
RowShape row_shape(int64_t rows, int64_t d, int V, int device) {
  const int64_t packs = (d + V - 1) / V;
  unsigned tx = 32;
  while (tx < unsigned(kRowBlock) && int64_t(tx) < packs) tx <<= 1;
  const unsigned ty = unsigned(kRowBlock) / tx;
  const int64_t want = (rows + ty - 1) / ty;
  const int64_t cap = int64_t(hmoe::cuda::properties(device).multiprocessors) * 16;
  return {tx, ty, unsigned(std::max<int64_t>(1, std::min(want, cap)))};
}

// 16-byte packs when the row length and every base pointer allow them.
template <typename T>
bool vec_ok(int64_t d, std::initializer_list<const void*> ptrs) {
  if (d % kVec16<T> != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned_to(p, 16)) return false;
  return true;
}

void permute_rows_cuda(const Tensor& x, const Tensor& perm, int64_t k, const Tensor& slot_scale, const Tensor& out) {
  const int64_t R = out.size(0), d = out.size(1);
  if (R == 0 || d == 0) return;
  const int device = out.device().index;
  dispatch_device_real(x.dtype(), "permute_rows", [&]<typename T>() {
    const T* xp = static_cast<const T*>(x.data_ptr<void>());
    const T* sc = slot_scale.defined() ? static_cast<const T*>(slot_scale.data_ptr<void>()) : nullptr;
    T* o = static_cast<T*>(out.data_ptr<void>());
    const auto* pm = static_cast<const int64_t*>(perm.data_ptr<void>());
    auto go = [&]<int V>() {
      const RowShape s = row_shape(R, d, V, device);
      auto kern = &permute_rows_kernel<T, V>;
      HMOE_LAUNCH_CHECKED(kern, s.blocks, dim3(s.tx, s.ty), 0, stream_of(out).native(), xp, pm, k, sc, o, R, d);
    };
    if (vec_ok<T>(d, {xp, o}))
      go.template operator()<kVec16<T>>();
    else
      go.template operator()<1>();
  });
}

void combine_cuda(const Tensor& ys, const Tensor& inverse, int64_t k, const Tensor& gates, const Tensor& out) {
  const int64_t Tn = out.size(0), d = out.size(1);
  if (Tn == 0 || d == 0) return;
  const int device = out.device().index;
  dispatch_device_real(ys.dtype(), "combine", [&]<typename T>() {
    const T* y = static_cast<const T*>(ys.data_ptr<void>());
    const T* g = gates.defined() ? static_cast<const T*>(gates.data_ptr<void>()) : nullptr;
    T* o = static_cast<T*>(out.data_ptr<void>());
    const auto* inv = static_cast<const int64_t*>(inverse.data_ptr<void>());
    auto go = [&]<int V>() {
      const RowShape s = row_shape(Tn, d, V, device);
      auto kern = &combine_kernel<T, V>;
      HMOE_LAUNCH_CHECKED(kern, s.blocks, dim3(s.tx, s.ty), 0, stream_of(out).native(), y, inv, k, g, o, Tn, d);
    };
    if (vec_ok<T>(d, {y, o}))
      go.template operator()<kVec16<T>>();
    else
      go.template operator()<1>();
  });
}

void combine_gate_grad_cuda(const Tensor& dy, const Tensor& ys, const Tensor& inverse, int64_t k, const Tensor& dg) {
  const int64_t pairs = dg.numel(), d = dy.size(1);
  if (pairs == 0) return;
  const int device = dg.device().index;
  dispatch_device_real(dy.dtype(), "combine backward", [&]<typename T>() {
    const T* a = static_cast<const T*>(dy.data_ptr<void>());
    const T* b = static_cast<const T*>(ys.data_ptr<void>());
    T* o = static_cast<T*>(dg.data_ptr<void>());
    const auto* inv = static_cast<const int64_t*>(inverse.data_ptr<void>());
    auto go = [&]<int V>() {
      const unsigned blocks = ixs::grid_for(pairs * 32, device, kRowBlock);
      auto kern = &combine_gate_grad_kernel<T, V>;
      HMOE_LAUNCH_CHECKED(kern, blocks, kRowBlock, 0, stream_of(dg).native(), a, b, inv, k, o, pairs, d);
    };
    if (vec_ok<T>(d, {a, b}))
      go.template operator()<kVec16<T>>();
    else
      go.template operator()<1>();
  });
}

// ---- selection patterns ---------------------------------------------------------------------

// Ids of a row one thread reads in one access: the most of 4, 2, 1 that divides k and
// fits 16 bytes and the pointer's alignment.
int ids_per_access(int64_t k, size_t elem, const void* p) {
  for (int v : {4, 2})
    if (k % v == 0 && size_t(v) * elem <= 16 && aligned_to(p, size_t(v) * elem)) return v;
  return 1;
}

void pattern_ids_cuda(const Tensor& ids, int64_t N, const Tensor& bits) {
  const int64_t T = ids.size(0), k = ids.size(1);
  if (T == 0) return;
  const Device dev = ids.device();
  const ixs::DeviceFlag flag(dev);
  hmoe::detail::dispatch_index(ids.dtype(), "pattern_ids", [&]<typename I>() {
    const I* id = static_cast<const I*>(ids.data_ptr<void>());
    auto go = [&]<int V>() {
      auto kern = &pattern_ids_kernel<I, V>;
      HMOE_LAUNCH_CHECKED(kern, ixs::grid_for(T, dev.index), 256, 0, stream_of(ids).native(), id, T, k, N,
                          static_cast<int64_t*>(bits.data_ptr<void>()), flag.ptr());
    };
    const int v = ids_per_access(k, sizeof(I), id);
    if constexpr (sizeof(I) == 4) {
      if (v == 4) return go.template operator()<4>();
    }
    if (v == 2)
      go.template operator()<2>();
    else
      go.template operator()<1>();
  });
  const unsigned long long bad = flag.read();
  if (bad == kNoError) return;
  // The first failing (token, slot): out of range, else the row's repeat (worded as the CPU).
  const int64_t pos = int64_t(bad), t = pos / k, e = ixs::read_index_at(ids, pos);
  HMOE_CHECK(e >= 0 && e < N, "pattern_ids: expert id ", e, " of token ", t, " is out of range [0, ", N, ")");
  HMOE_FAIL("pattern_ids: token ", t, " selects expert ", e, " twice");
}

void unique_patterns_cuda(const Tensor& bits, Tensor& patterns, Tensor& index) {
  const int64_t T = bits.numel();
  const Device dev = bits.device();
  HMOE_CHECK(T < (int64_t(1) << 31) - 1, "unique_patterns: the cuda kernel ranks tokens in 32 bits; got ", T);
  index = Tensor::empty({T}, {DType::i32, dev});
  if (T == 0) {
    patterns = Tensor::empty({0}, {DType::i64, dev});
    return;
  }
  const auto& stream = stream_of(bits);
  const Tensor bufa = ixs::pack_buffer<ixs::Pack128>(T, dev), bufb = ixs::pack_buffer<ixs::Pack128>(T, dev);
  auto* a = ixs::pack_ptr<ixs::Pack128>(bufa);
  HMOE_LAUNCH_CHECKED(pattern_packs_kernel, ixs::grid_for(T, dev.index), 256, 0, stream.native(),
                      static_cast<const int64_t*>(bits.data_ptr<void>()), T, a);
  const ixs::Pack128* sorted = ixs::sort_segments<ixs::Pack128>(a, ixs::pack_ptr<ixs::Pack128>(bufb), 1, T, dev.index);
  // Room for T patterns plus the count in the last word; the host reads only the count.
  const Tensor buf = Tensor::empty({T + 1}, {DType::i64, dev});
  auto* pat = static_cast<int64_t*>(buf.data_ptr<void>());
  HMOE_LAUNCH_CHECKED(pattern_ranks_kernel, 1, 1024, 0, stream.native(), sorted, T, pat,
                      static_cast<int32_t*>(index.data_ptr<void>()), pat + T);
  int64_t P = 0;
  hmoe::cuda::memcpy_async(&P, pat + T, sizeof P, hmoe::cuda::CopyKind::device_to_host, stream);
  stream.synchronize();
  patterns = buf.narrow(0, 0, P);  // a contiguous view of the first P words
}

}  // namespace

void register_moe_dispatch_cuda() {
  using namespace hmoe::moe;
  plan_stub.set(DeviceType::cuda, &plan_cuda);
  permute_rows_stub.set(DeviceType::cuda, &permute_rows_cuda);
  combine_stub.set(DeviceType::cuda, &combine_cuda);
  combine_gate_grad_stub.set(DeviceType::cuda, &combine_gate_grad_cuda);
  pattern_ids_stub.set(DeviceType::cuda, &pattern_ids_cuda);
  unique_patterns_stub.set(DeviceType::cuda, &unique_patterns_cuda);
}

}  // namespace hmoe::ops::cuda
