// CPU kernels of the norm family (being written).
namespace hmoe::ops::cpu {
void register_norm_cpu() {}
}  // namespace hmoe::ops::cpu
