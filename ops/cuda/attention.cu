// The attention kernel family on the cuda device: causal attention forward and
// backward (flash-attention-style tiles: WMMA for bf16/f16, FMA for f32/f64; head dims
// up to 128 in buckets of 32/64/128) and dropout with the CPU's exact Philox mask.
// Kernel bodies: attention.cuh (FMA, dropout) and attention_wmma.cuh (tensor cores).
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "ops/attention_kernels.h"
#include "ops/cuda/attention.cuh"
#include "ops/cuda/attention_wmma.cuh"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/dispatch.h"

namespace hmoe::ops::cuda {
namespace {

using attn::Operand;

constexpr int64_t kMaxHeadDim = 128;

// A [B, H, T, Dh] tensor of host element type T as a kernel operand.
template <typename T>
Operand<device_elem_t<T>> operand(const Tensor& t) {
  using D = device_elem_t<T>;
  const auto* p = reinterpret_cast<const D*>(t.data_ptr<T>());
  constexpr int64_t V = 16 / int64_t(sizeof(D));
  const bool vec = t.size(3) % V == 0 && aligned_to(p, 16) && t.stride(0) % V == 0 &&
                   t.stride(1) % V == 0 && t.stride(2) % V == 0;
  return {p, t.stride(0), t.stride(1), t.stride(2), vec};
}

device::Stream stream_of(const Tensor& t) {
  return static_cast<device::Stream>(hmoe::cuda::current_stream(t.device().index).native());
}

// Runs fn.template operator()<DM>() for the smallest head-dim bucket holding Dh.
template <typename Fn>
void with_bucket(const char* op, const Tensor& q, Fn&& fn) {
  const int64_t dh = q.size(3);
  HMOE_CHECK(dh <= kMaxHeadDim, op, ": the cuda kernel supports head dims up to ", kMaxHeadDim, ", got ", dh, " (",
             q.meta_str(), ")");
  if (dh <= 32) fn.template operator()<32>();
  else if (dh <= 64) fn.template operator()<64>();
  else fn.template operator()<128>();
}

void check_grid(const char* op, const Tensor& q) {
  HMOE_CHECK(q.size(0) * q.size(1) < (int64_t(1) << 31) && q.size(2) < (int64_t(1) << 31) - 64, op,
             ": too many heads or positions for one launch (", q.meta_str(), ")");
}

template <typename T>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& out,
                   const Tensor& lse) {
  using D = device_elem_t<T>;
  using C = compute_t<T>;
  const int H = int(q.size(1)), Tn = int(q.size(2)), Dh = int(q.size(3));
  const unsigned bh = unsigned(q.size(0) * q.size(1));
  auto* o = reinterpret_cast<D*>(out.data_ptr<T>());
  C* l = lse.data_ptr<C>();
  const auto s = stream_of(q);
  with_bucket("causal_attention", q, [&]<int DM>() {
    if constexpr (std::is_same_v<C, float> && !std::is_same_v<D, float>) {
      using L = attn::WmmaLayout<DM>;
      const dim3 grid(bh, unsigned((Tn + L::B - 1) / L::B));
      hmoe::cuda::launch_checked("attn_fwd_wmma", &attn::attn_fwd_wmma<D, DM>, grid, dim3(128), L::fwd, s,
                                 operand<T>(q), operand<T>(k), operand<T>(v), H, Tn, Dh, float(scale), o, l);
    } else {
      constexpr int BQ = attn::SimtTiles<C>::fwd_q;
      const dim3 grid(bh, unsigned((Tn + BQ - 1) / BQ));
      hmoe::cuda::launch_checked("attn_fwd_simt", &attn::attn_fwd_simt<C, DM>, grid, dim3(attn::kSimtFwdThreads),
                                 attn::simt_fwd_smem<C, DM>(), s, operand<T>(q), operand<T>(k), operand<T>(v), H, Tn,
                                 Dh, C(scale), o, l);
    }
  });
}

template <typename T>
void backward_typed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& go,
                    const Tensor& lse, double scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  using D = device_elem_t<T>;
  using C = compute_t<T>;
  const int H = int(q.size(1)), Tn = int(q.size(2)), Dh = int(q.size(3));
  const unsigned bh = unsigned(q.size(0) * q.size(1));
  const auto s = stream_of(q);
  // D_i = rowsum(dO * O), shared by both backward kernels.
  const Tensor drow = Tensor::empty(lse.shape(), {lse.dtype(), lse.device()});
  const int64_t rows = lse.numel();
  const unsigned rd_blocks = unsigned(std::min<int64_t>((rows + 7) / 8, 4096));
  hmoe::cuda::launch_checked("attn_bwd_rowdot", &attn::attn_bwd_rowdot<D, C>, dim3(rd_blocks), dim3(256), 0, s,
                             operand<T>(o), operand<T>(go), H, Tn, Dh, rows, drow.data_ptr<C>());
  const C* l = lse.data_ptr<C>();
  const C* dr = drow.data_ptr<C>();
  auto* dqp = reinterpret_cast<D*>(dq.data_ptr<T>());
  auto* dkp = reinterpret_cast<D*>(dk.data_ptr<T>());
  auto* dvp = reinterpret_cast<D*>(dv.data_ptr<T>());
  const auto oq = operand<T>(q), ok = operand<T>(k), ov = operand<T>(v), og = operand<T>(go);
  with_bucket("causal_attention_backward", q, [&]<int DM>() {
    if constexpr (std::is_same_v<C, float> && !std::is_same_v<D, float>) {
      using L = attn::WmmaLayout<DM>;
      const dim3 grid(bh, unsigned((Tn + L::B - 1) / L::B));
      hmoe::cuda::launch_checked("attn_dkdv_wmma", &attn::attn_dkdv_wmma<D, DM>, grid, dim3(256), L::dkdv, s, oq, ok,
                                 ov, og, l, dr, H, Tn, Dh, float(scale), dkp, dvp);
      hmoe::cuda::launch_checked("attn_dq_wmma", &attn::attn_dq_wmma<D, DM>, grid, dim3(256), L::dq, s, oq, ok, ov, og,
                                 l, dr, H, Tn, Dh, float(scale), dqp);
    } else {
      using Tl = attn::SimtTiles<C>;
      hmoe::cuda::launch_checked("attn_dkdv_simt", &attn::attn_dkdv_simt<C, DM>,
                                 dim3(bh, unsigned((Tn + Tl::kv_k - 1) / Tl::kv_k)), dim3(attn::kSimtBwdThreads),
                                 attn::simt_dkdv_smem<C, DM>(), s, oq, ok, ov, og, l, dr, H, Tn, Dh, C(scale), dkp,
                                 dvp);
      hmoe::cuda::launch_checked("attn_dq_simt", &attn::attn_dq_simt<C, DM>,
                                 dim3(bh, unsigned((Tn + Tl::dq_q - 1) / Tl::dq_q)), dim3(attn::kSimtBwdThreads),
                                 attn::simt_dq_smem<C, DM>(), s, oq, ok, ov, og, l, dr, H, Tn, Dh, C(scale), dqp);
    }
  });
}

void attention_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& out,
                            const Tensor& lse) {
  check_grid("causal_attention", q);
  detail::dispatch_float(q.dtype(), "causal_attention",
                         [&]<typename T>() { forward_typed<T>(q, k, v, scale, out, lse); });
}

void attention_backward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& go,
                             const Tensor& lse, double scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  check_grid("causal_attention_backward", q);
  detail::dispatch_float(q.dtype(), "causal_attention_backward",
                         [&]<typename T>() { backward_typed<T>(q, k, v, o, go, lse, scale, dq, dk, dv); });
}

void dropout_cuda(const Tensor& in, const Tensor& out, double p, uint64_t seed, uint64_t offset) {
  detail::dispatch_float(in.dtype(), "dropout", [&]<typename T>() {
    using D = device_elem_t<T>;
    using C = compute_t<T>;
    const int64_t n = in.numel();
    if (n == 0) return;
    const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 4096));
    hmoe::cuda::launch_checked("dropout_kernel", &attn::dropout_kernel<D, C>, dim3(blocks), dim3(256), 0, stream_of(in),
                               reinterpret_cast<const D*>(in.data_ptr<T>()), reinterpret_cast<D*>(out.data_ptr<T>()), n,
                               float(p), C(1.0 / (1.0 - p)), seed, offset);
  });
}

}  // namespace

void register_attention_cuda() {
  attention_forward_stub.set(DeviceType::cuda, &attention_forward_cuda);
  attention_backward_stub.set(DeviceType::cuda, &attention_backward_cuda);
  dropout_stub.set(DeviceType::cuda, &dropout_cuda);
}

}  // namespace hmoe::ops::cuda
