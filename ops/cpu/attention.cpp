// CPU kernels of the attention family (being written).
namespace hmoe::ops::cpu {
void register_attention_cpu() {}
}  // namespace hmoe::ops::cpu
