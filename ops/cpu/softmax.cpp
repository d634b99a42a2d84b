// CPU kernels of the softmax family (being written).
namespace hmoe::ops::cpu {
void register_softmax_cpu() {}
}  // namespace hmoe::ops::cpu
