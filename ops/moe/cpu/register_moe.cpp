// CPU kernels of the MoE family (being written).
namespace hmoe::ops::cpu {
void register_moe_cpu() {}
}  // namespace hmoe::ops::cpu
