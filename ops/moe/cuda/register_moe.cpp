// Registers the MoE CUDA kernels (router, token dispatch, grouped GEMM) with the stubs of
// ops/moe/moe_kernels.h: the one list of them, mirroring ops/moe/cpu/register_moe.cpp.
namespace hmoe::ops::cuda {

void register_moe_router_cuda();    // ops/moe/cuda/router.cu
void register_moe_dispatch_cuda();  // ops/moe/cuda/token_dispatch.cu
void register_moe_gemm_cuda();      // ops/moe/cuda/grouped_gemm.cu

void register_moe_cuda() {
  register_moe_router_cuda();
  register_moe_dispatch_cuda();
  register_moe_gemm_cuda();
}

}  // namespace hmoe::ops::cuda
