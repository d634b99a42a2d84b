// The factory kernel family on the cuda device: fill (any strides, any dtype), arange
// and Philox random tensors (uniform / normal) producing the CPU's values bit for bit
// (ops/cpu/factory.cpp): the same per-element formula. The CPU build (g++, -march=native,
// which contracts a + b * c into an FMA by default in C++) computes the multiply-adds
// fused, so these kernels call fma() explicitly: one rounding, on both sides.
#include <cstring>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/rng.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/factory_kernels.h"

namespace hmoe::ops::cuda {
namespace {

constexpr int kThreads = 256;

// Writes the element bits v (W: the unsigned integer of the element's width) to every
// element of a dense run of n. 1-d grid of 256-thread blocks, grid-stride.
template <typename W>
__global__ void fill_dense_kernel(W* __restrict__ out, W v, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) out[i] = v;
}

// The same over a strided layout (operand 0 is out).
template <typename W>
__global__ void fill_strided_kernel(W* __restrict__ out, W v, StridedLayout<1> layout, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    layout.offsets(i, off);
    out[off[0]] = v;
  }
}

// out[i] = T(start + i * step) over contiguous out; 1-d grid, grid-stride.
template <typename T>
__global__ void arange_kernel(T* __restrict__ out, double start, double step, int64_t n) {
  const int64_t gstep = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += gstep)
    out[i] = from_compute<T>(static_cast<device_compute_t<T>>(::fma(double(i), step, start)));
}

// Philox draws over contiguous out: uniform a + (b - a)(1 - u) with u in (0, 1], or
// normal a + b z (Box-Muller), element i from counter offset + i. 1-d grid, grid-stride.
template <typename T>
__global__ void random_kernel(T* __restrict__ out, bool normal, uint64_t seed, uint64_t offset, double a,
                              double b_or_range, int64_t n) {
  const int64_t gstep = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += gstep) {
    const double v = normal ? ::fma(b_or_range, philox_normal(seed, offset, uint64_t(i)), a)
                            : ::fma(b_or_range, 1.0 - philox_uniform_f64(seed, offset, uint64_t(i)), a);
    out[i] = from_compute<T>(static_cast<device_compute_t<T>>(v));
  }
}

template <typename W>
void launch_fill(const Tensor& out, W bits) {
  const int64_t n = out.numel();
  const int device = out.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const StridedLayout<1> layout = make_layout<1>(out.shape(), {&out.strides()});
  W* p = static_cast<W*>(out.data_ptr<void>());
  if (is_dense(layout)) {
    // A pattern of equal bytes (zeros, all-ones) is a memset.
    unsigned char bytes[sizeof(W)];
    std::memcpy(bytes, &bits, sizeof(W));
    bool same = true;
    for (size_t j = 1; j < sizeof(W); ++j) same = same && bytes[j] == bytes[0];
    if (same) return hmoe::cuda::memset_async(p, bytes[0], size_t(n) * sizeof(W), stream);
    auto fill_dense = &fill_dense_kernel<W>;
    HMOE_LAUNCH_CHECKED(fill_dense, flat_blocks(n, device, kThreads), kThreads, 0, stream.native(), p, bits, n);
  } else {
    auto fill_strided = &fill_strided_kernel<W>;
    HMOE_LAUNCH_CHECKED(fill_strided, flat_blocks(n, device, kThreads), kThreads, 0, stream.native(), p, bits, layout, n);
  }
}

void fill_cuda(const Tensor& out, double value) {
  if (out.numel() == 0) return;
  hmoe::detail::dispatch_all(out.dtype(), "fill", [&]<typename T>() {
    const T v = T(compute_t<T>(value));  // the host's conversion, as on the CPU
    if constexpr (sizeof(T) == 1) {
      uint8_t w;
      std::memcpy(&w, &v, 1);
      launch_fill<uint8_t>(out, w);
    } else if constexpr (sizeof(T) == 2) {
      uint16_t w;
      std::memcpy(&w, &v, 2);
      launch_fill<uint16_t>(out, w);
    } else if constexpr (sizeof(T) == 4) {
      uint32_t w;
      std::memcpy(&w, &v, 4);
      launch_fill<uint32_t>(out, w);
    } else {
      uint64_t w;
      std::memcpy(&w, &v, 8);
      launch_fill<uint64_t>(out, w);
    }
  });
}

void arange_cuda(const Tensor& out, double start, double step) {
  HMOE_CHECK(out.is_contiguous(), "arange: output must be contiguous, got ", out.meta_str());
  const int64_t n = out.numel();
  dispatch_device_numeric(out.dtype(), "arange", [&]<typename D>() {
    if (n == 0) return;
    const int device = out.device().index;
    auto arange_k = &arange_kernel<D>;
    HMOE_LAUNCH_CHECKED(arange_k, flat_blocks(n, device, kThreads), kThreads, 0,
                        hmoe::cuda::current_stream(device).native(), static_cast<D*>(out.data_ptr<void>()), start,
                        step, n);
  });
}

void random_cuda(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  HMOE_CHECK(out.is_contiguous(), "random: output must be contiguous, got ", out.meta_str());
  const int64_t n = out.numel();
  dispatch_device_float(out.dtype(), "random", [&]<typename D>() {
    if (n == 0) return;
    const int device = out.device().index;
    const bool normal = kind == RandomKind::normal;
    auto random_k = &random_kernel<D>;
    HMOE_LAUNCH_CHECKED(random_k, flat_blocks(n, device, kThreads), kThreads, 0,
                        hmoe::cuda::current_stream(device).native(), static_cast<D*>(out.data_ptr<void>()), normal,
                        seed, offset, a, normal ? b : b - a, n);
  });
}

}  // namespace

void register_factory_cuda() {
  fill_stub.set(DeviceType::cuda, &fill_cuda);
  arange_stub.set(DeviceType::cuda, &arange_cuda);
  random_stub.set(DeviceType::cuda, &random_cuda);
}

}  // namespace hmoe::ops::cuda
