// CPU kernels of the matmul family (being written).
namespace hmoe::ops::cpu {
void register_matmul_cpu() {}
}  // namespace hmoe::ops::cpu
