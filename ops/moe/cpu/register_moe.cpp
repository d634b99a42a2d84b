// Registers the MoE CPU kernels (router, token dispatch, grouped GEMM) with their stubs.
namespace hmoe::ops::cpu {

void register_moe_router_cpu();    // ops/moe/cpu/router.cpp
void register_moe_dispatch_cpu();  // ops/moe/cpu/token_dispatch.cpp
void register_moe_gemm_cpu();      // ops/moe/cpu/grouped_gemm.cpp

void register_moe_cpu() {
  register_moe_router_cpu();
  register_moe_dispatch_cpu();
  register_moe_gemm_cpu();
}

}  // namespace hmoe::ops::cpu
