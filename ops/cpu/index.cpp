// CPU kernels of the index family (being written).
namespace hmoe::ops::cpu {
void register_index_cpu() {}
}  // namespace hmoe::ops::cpu
