// CPU kernels of the sort family (being written).
namespace hmoe::ops::cpu {
void register_sort_cpu() {}
}  // namespace hmoe::ops::cpu
