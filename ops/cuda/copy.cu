// The copy kernel family on the cuda device: dst[i] = convert(src[i]) over equal
// shapes, any strides (rank <= 8) and any pair of dtypes, converting exactly as the CPU
// backend does (ops/cpu/copy.cpp). Dense same-dtype copies are a device memcpy.
#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/dispatch.h"
#include "ops/view.h"
#include "ops/view_kernels.h"

namespace hmoe::ops::cuda {
namespace {

constexpr int kThreads = 256;

// Dense conversion, dst[i] = convert(src[i]): 1-d grid of 256-thread blocks, grid-stride.
template <typename S, typename D>
__global__ void convert_dense_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) dst[i] = convert<S, D>(src[i]);
}

// Strided conversion: element i's offsets come from the coalesced layout (operand 0 is
// src, 1 is dst). Same launch shape as the dense kernel.
template <typename S, typename D>
__global__ void convert_strided_kernel(const S* __restrict__ src, D* __restrict__ dst, StridedLayout<2> layout,
                                       int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[2];
    layout.offsets(i, off);
    dst[off[1]] = convert<S, D>(src[off[0]]);
  }
}

// Strided copy within one dtype: moves the element bits (W is the unsigned integer of
// the element's width), so one instantiation serves every dtype of that width.
template <typename W>
__global__ void copy_bits_strided_kernel(const W* __restrict__ src, W* __restrict__ dst, StridedLayout<2> layout,
                                         int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[2];
    layout.offsets(i, off);
    dst[off[1]] = src[off[0]];
  }
}

template <typename W>
void launch_copy_bits(const void* src, void* dst, const StridedLayout<2>& layout, int64_t n, int device) {
  auto copy_bits_strided = &copy_bits_strided_kernel<W>;
  HMOE_LAUNCH_CHECKED(copy_bits_strided, flat_blocks(n, device, kThreads), kThreads, 0,
                      hmoe::cuda::current_stream(device).native(), static_cast<const W*>(src), static_cast<W*>(dst),
                      layout, n);
}

void copy_cuda(const Tensor& src, const Tensor& dst) {
  HMOE_CHECK(src.shape() == dst.shape(), "copy: shapes differ (", src.meta_str(), " to ", dst.meta_str(), ")");
  HMOE_CHECK(src.device() == dst.device(), "copy: ", src.device().str(), " to ", dst.device().str(),
             " is not a same-device copy");
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int device = dst.device().index;
  const StridedLayout<2> layout = make_layout<2>(dst.shape(), {&src.strides(), &dst.strides()});
  const void* s = src.data_ptr<void>();
  void* d = dst.data_ptr<void>();
  const auto& stream = hmoe::cuda::current_stream(device);
  if (src.dtype() == dst.dtype()) {
    const size_t es = dtype_size(src.dtype());
    if (is_dense(layout)) {
      if (s != d) hmoe::cuda::memcpy_async(d, s, size_t(n) * es, hmoe::cuda::CopyKind::device_to_device, stream);
      return;
    }
    switch (es) {
      case 1: return launch_copy_bits<uint8_t>(s, d, layout, n, device);
      case 2: return launch_copy_bits<uint16_t>(s, d, layout, n, device);
      case 4: return launch_copy_bits<uint32_t>(s, d, layout, n, device);
      default: return launch_copy_bits<uint64_t>(s, d, layout, n, device);
    }
  }
  const unsigned blocks = flat_blocks(n, device, kThreads);
  dispatch_device_all(src.dtype(), "copy", [&]<typename S>() {
    dispatch_device_all(dst.dtype(), "copy", [&]<typename D>() {
      if (is_dense(layout)) {
        auto convert_dense = &convert_dense_kernel<S, D>;
        HMOE_LAUNCH_CHECKED(convert_dense, blocks, kThreads, 0, stream.native(), static_cast<const S*>(s), static_cast<D*>(d), n);
      } else {
        auto convert_strided = &convert_strided_kernel<S, D>;
        HMOE_LAUNCH_CHECKED(convert_strided, blocks, kThreads, 0, stream.native(), static_cast<const S*>(s), static_cast<D*>(d),
                            layout, n);
      }
    });
  });
}

}  // namespace

void register_copy_cuda() { copy_stub.set(DeviceType::cuda, &copy_cuda); }

}  // namespace hmoe::ops::cuda
