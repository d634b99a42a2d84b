// Registers every CPU kernel family with the dispatch registry.
#include "ops/dispatch.h"

namespace hmoe::ops {
namespace cpu {
void register_elementwise_cpu();
void register_factory_cpu();
void register_copy_cpu();
void register_reduce_cpu();
void register_matmul_cpu();
void register_index_cpu();
}  // namespace cpu

void register_cpu_kernels() {
  cpu::register_elementwise_cpu();
  cpu::register_factory_cpu();
  cpu::register_copy_cpu();
  cpu::register_reduce_cpu();
  cpu::register_matmul_cpu();
  cpu::register_index_cpu();
}

}  // namespace hmoe::ops
