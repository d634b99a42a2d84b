// Registers the CUDA backend (real or emulated): its device allocator, and every CUDA
// kernel family with the dispatch registry: the one list of them, mirroring
// ops/cpu/register.cpp.
#include "engine/cuda/allocator.h"
#include "engine/storage.h"
#include "ops/dispatch.h"

namespace hmoe::ops {
namespace cuda {
void register_copy_cuda();         // ops/cuda/copy.cu
void register_factory_cuda();      // ops/cuda/factory.cu
void register_matmul_cuda();       // ops/cuda/matmul.cpp (through the BLAS layer)
void register_elementwise_cuda();  // ops/cuda/elementwise.cu
void register_reduce_cuda();       // ops/cuda/reduce.cu
void register_softmax_cuda();      // ops/cuda/softmax.cu
void register_norm_cuda();         // ops/cuda/norm.cu
void register_index_cuda();        // ops/cuda/index.cu
void register_sort_cuda();         // ops/cuda/sort.cu
void register_attention_cuda();    // ops/cuda/attention.cu (attention and dropout)
void register_optim_cuda();        // ops/cuda/optim.cu (AdamW, SGD, sum of squares)
void register_moe_cuda();          // ops/moe/cuda/register_moe.cpp (router, dispatch, grouped GEMM)
}  // namespace cuda

void register_cuda_backend() {
  register_allocator(DeviceType::cuda, &hmoe::cuda::device_allocator());
  cuda::register_copy_cuda();
  cuda::register_factory_cuda();
  cuda::register_matmul_cuda();
  cuda::register_elementwise_cuda();
  cuda::register_reduce_cuda();
  cuda::register_softmax_cuda();
  cuda::register_norm_cuda();
  cuda::register_index_cuda();
  cuda::register_sort_cuda();
  cuda::register_attention_cuda();
  cuda::register_optim_cuda();
  cuda::register_moe_cuda();
}

}  // namespace hmoe::ops
