// The router on the cuda device (contract: ops/moe/moe_kernels.h, reference:
// ops/moe/cpu/router.cpp; kernel bodies in router.cuh): fused softmax + top-k + gates
// (rows of up to 256 experts in registers, longer rows streamed), its backward, dense
// gates, and the smooth load with its gradient. Bad input (NaN logits, out-of-range
// expert ids) is flagged on the device and raised as hmoe::Error after the kernel,
// worded as the CPU words it; that costs one small read-back per call.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/index_sort.cuh"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/moe/cuda/router.cuh"
#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cuda {
namespace {

using namespace moe_router;

// Row kernels: 4 warps a block, enough blocks to fill the device a few times; w lanes a
// row (32 unless given).
constexpr int kRowThreads = 128;
unsigned row_blocks(int64_t rows, int device, int w = 32) { return flat_blocks(rows * w, device, kRowThreads); }

// Calls f(std::integral_constant<int, W>) with the lanes per row of the top-k kernels: a
// row of N <= 32 experts gets pow2_ceil(N) lanes, at least 4 (8 experts: four rows a warp,
// every lane busy, each load a whole 128-byte line); compile-time, so the butterflies unroll.
template <typename F>
void with_topk_lanes(int64_t N, F&& f) {
  if (N <= 4)
    f(std::integral_constant<int, 4>{});
  else if (N <= 8)
    f(std::integral_constant<int, 8>{});
  else if (N <= 16)
    f(std::integral_constant<int, 16>{});
  else
    f(std::integral_constant<int, 32>{});
}

const hmoe::cuda::Stream& stream_of(const Tensor& t) { return hmoe::cuda::current_stream(t.device().index); }

void check_int_sizes(const char* op, int64_t N, int64_t k) {
  HMOE_CHECK(N < (int64_t(1) << 31) && k < (int64_t(1) << 31), op,
             ": the cuda kernel indexes experts in 32 bits; got N = ", N, ", k = ", k);
}

// ---- route_topk -------------------------------------------------------------------------

void router_topk_cuda(const Tensor& logits, int64_t k, bool renorm, const Tensor& probs, const Tensor& ids,
                      const Tensor& gates) {
  const int64_t T = logits.size(0), N = logits.size(1);
  if (T == 0) return;
  check_int_sizes("route_topk", N, k);
  const int device = logits.device().index;
  const ixs::DeviceFlag flag(logits.device());
  dispatch_device_real(logits.dtype(), "route_topk", [&]<typename T_>() {
    auto go = [&]<int VPL, int W>() {
      auto kern = &router_topk_kernel<T_, VPL, W>;
      HMOE_LAUNCH_CHECKED(kern, row_blocks(T, device, W), kRowThreads, 0, stream_of(logits).native(),
                          static_cast<const T_*>(logits.data_ptr<void>()), T, int(N), int(k), renorm,
                          data_or_null<T_>(probs), data_or_null<int32_t>(ids), data_or_null<T_>(gates), flag.ptr());
    };
    if (N <= 32)
      with_topk_lanes(N, [&](auto w) { go.template operator()<1, decltype(w)::value>(); });
    else if (N <= 64)
      go.template operator()<2, 32>();
    else if (N <= 128)
      go.template operator()<4, 32>();
    else if (N <= 256)
      go.template operator()<8, 32>();
    else
      go.template operator()<0, 32>();
  });
  const unsigned long long bad = flag.read();
  if (bad != ixs::kNoError)
    HMOE_FAIL("route_topk: logits contain NaN (token ", int64_t(bad) / N, ", expert ", int64_t(bad) % N, ")");
}

void router_backward_cuda(const Tensor& probs, const Tensor& ids, const Tensor& gates, bool renorm,
                          const Tensor& dgates, const Tensor& dprobs, const Tensor& dlogits) {
  const int64_t T = probs.size(0), N = probs.size(1), k = gates.size(1);
  if (T == 0) return;
  check_int_sizes("route_topk backward", N, k);
  const int device = probs.device().index;
  dispatch_device_real(probs.dtype(), "route_topk backward", [&]<typename T_>() {
    with_topk_lanes(N, [&](auto w) {
      auto kern = &router_backward_kernel<T_, decltype(w)::value>;
      HMOE_LAUNCH_CHECKED(kern, row_blocks(T, device, w), kRowThreads, 0, stream_of(probs).native(),
                          static_cast<const T_*>(probs.data_ptr<void>()),
                          static_cast<const int32_t*>(ids.data_ptr<void>()),
                          static_cast<const T_*>(gates.data_ptr<void>()), renorm, data_or_null<const T_>(dgates),
                          data_or_null<const T_>(dprobs), data_or_null<T_>(dlogits), T, int(N), int(k));
    });
  });
}

// ---- dense gates --------------------------------------------------------------------------

void scatter_gates_cuda(const Tensor& values, const Tensor& ids, const Tensor& out) {
  const int64_t T = out.size(0), N = out.size(1), k = values.size(1);
  if (T == 0) return;
  const int device = out.device().index;
  const ixs::DeviceFlag flag(out.device());
  dispatch_device_real(values.dtype(), "dense_gates", [&]<typename T_>() {
    hmoe::detail::dispatch_index(ids.dtype(), "dense_gates", [&]<typename I>() {
      auto kern = &scatter_gates_kernel<T_, I>;
      HMOE_LAUNCH_CHECKED(kern, flat_blocks(T * N, device), 256, 0, stream_of(out).native(),
                          static_cast<const T_*>(values.data_ptr<void>()), static_cast<const I*>(ids.data_ptr<void>()),
                          data_or_null<T_>(out), T, N, k, flag.ptr());
    });
  });
  const unsigned long long bad = flag.read();
  if (bad != ixs::kNoError)
    HMOE_FAIL("dense_gates: expert id ", ixs::read_index_at(ids, int64_t(bad)), " at position ", int64_t(bad),
              " is out of range [0, ", N, ")");
}

void gather_gates_cuda(const Tensor& dense, const Tensor& ids, const Tensor& out) {
  const int64_t total = out.numel(), k = out.size(1), N = dense.size(1);
  if (total == 0) return;
  const int device = out.device().index;
  dispatch_device_real(dense.dtype(), "dense_gates backward", [&]<typename T_>() {
    hmoe::detail::dispatch_index(ids.dtype(), "dense_gates backward", [&]<typename I>() {
      auto kern = &gather_gates_kernel<T_, I>;
      HMOE_LAUNCH_CHECKED(kern, flat_blocks(total, device), 256, 0, stream_of(out).native(),
                          static_cast<const T_*>(dense.data_ptr<void>()), static_cast<const I*>(ids.data_ptr<void>()),
                          data_or_null<T_>(out), total, N, k);
    });
  });
}

// ---- smooth load ----------------------------------------------------------------------------

// Rows per column-sum chunk: fixed, so the summation order (and the bits) do not depend
// on the device; at most 65535 chunks (grid.y).
int64_t chunk_rows_for(int64_t rows) { return std::max<int64_t>(256, (rows + 65534) / 65535); }

void smooth_load_cuda(const Tensor& clean, const Tensor& noisy, const Tensor& sd, int64_t k, const Tensor& load) {
  const int64_t T = clean.size(0), N = clean.size(1);
  check_int_sizes("smooth_load", N, k);
  const int device = load.device().index;
  const auto& stream = stream_of(load);
  dispatch_device_real(clean.dtype(), "smooth_load", [&]<typename T_>() {
    T_* out = data_or_null<T_>(load);
    if (T == 0) {
      hmoe::cuda::memset_async(out, 0, size_t(N) * sizeof(T_), stream);
      return;
    }
    const Tensor prob = Tensor::empty({T, N}, {clean.dtype(), clean.device()});
    auto kp = &smooth_load_prob_kernel<T_>;
    HMOE_LAUNCH_CHECKED(kp, row_blocks(T, device), kRowThreads, 0, stream.native(),
                        static_cast<const T_*>(clean.data_ptr<void>()), static_cast<const T_*>(noisy.data_ptr<void>()),
                        static_cast<const T_*>(sd.data_ptr<void>()), T, int(N), int(k), data_or_null<T_>(prob));
    // Column sums in a fixed order: chunks of rows in increasing row order, then the chunks in order.
    const int64_t chunk = chunk_rows_for(T), chunks = (T + chunk - 1) / chunk;
    const Tensor partial = chunks > 1 ? Tensor::empty({chunks, N}, {clean.dtype(), clean.device()}) : Tensor();
    T_* part = chunks > 1 ? data_or_null<T_>(partial) : out;
    auto kc = &column_partial_kernel<T_>;
    HMOE_LAUNCH_CHECKED(kc, dim3(unsigned((N + 127) / 128), unsigned(chunks)), 128, 0, stream.native(),
                        static_cast<const T_*>(prob.data_ptr<void>()), T, N, chunk, part);
    if (chunks > 1) {
      auto kt = &column_total_kernel<T_>;
      HMOE_LAUNCH_CHECKED(kt, flat_blocks(N, device, 128), 128, 0, stream.native(), static_cast<const T_*>(part),
                          chunks, N, out);
    }
  });
}

void smooth_load_backward_cuda(const Tensor& clean, const Tensor& noisy, const Tensor& sd, int64_t k,
                               const Tensor& dload, const Tensor& dclean, const Tensor& dnoisy, const Tensor& dstd) {
  const int64_t T = clean.size(0), N = clean.size(1);
  if (T == 0) return;
  check_int_sizes("smooth_load backward", N, k);
  const int device = clean.device().index;
  const auto& stream = stream_of(clean);
  dispatch_device_real(clean.dtype(), "smooth_load backward", [&]<typename T_>() {
    if (k >= N) {  // every expert always selected: a constant load, zero gradients
      for (const Tensor* g : {&dclean, &dnoisy, &dstd})
        hmoe::cuda::memset_async(g->data_ptr<void>(), 0, size_t(T * N) * sizeof(T_), stream);
      return;
    }
    auto kern = &smooth_load_backward_kernel<T_>;
    HMOE_LAUNCH_CHECKED(kern, row_blocks(T, device), kRowThreads, 0, stream.native(),
                        static_cast<const T_*>(clean.data_ptr<void>()), static_cast<const T_*>(noisy.data_ptr<void>()),
                        static_cast<const T_*>(sd.data_ptr<void>()), static_cast<const T_*>(dload.data_ptr<void>()), T,
                        int(N), int(k), data_or_null<T_>(dclean), data_or_null<T_>(dnoisy), data_or_null<T_>(dstd));
  });
}

}  // namespace

void register_moe_router_cuda() {
  using namespace hmoe::moe;
  router_topk_stub.set(DeviceType::cuda, &router_topk_cuda);
  router_backward_stub.set(DeviceType::cuda, &router_backward_cuda);
  scatter_gates_stub.set(DeviceType::cuda, &scatter_gates_cuda);
  gather_gates_stub.set(DeviceType::cuda, &gather_gates_cuda);
  smooth_load_stub.set(DeviceType::cuda, &smooth_load_cuda);
  smooth_load_backward_stub.set(DeviceType::cuda, &smooth_load_backward_cuda);
}

}  // namespace hmoe::ops::cuda
