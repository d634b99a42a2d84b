// Registers every CPU kernel family with the dispatch registry: the one list of them.
#include "ops/dispatch.h"

namespace hmoe::ops {
namespace cpu {
void register_elementwise_cpu();  // ops/cpu/elementwise.cpp
void register_factory_cpu();      // ops/cpu/factory.cpp
void register_copy_cpu();         // ops/cpu/copy.cpp
void register_reduce_cpu();       // ops/cpu/reduce.cpp
void register_softmax_cpu();      // ops/cpu/softmax.cpp
void register_norm_cpu();         // ops/cpu/norm.cpp
void register_matmul_cpu();       // ops/cpu/matmul.cpp
void register_attention_cpu();    // ops/cpu/attention.cpp
void register_index_cpu();        // ops/cpu/index.cpp
void register_sort_cpu();         // ops/cpu/sort.cpp
void register_optim_cpu();        // ops/cpu/optim.cpp
void register_moe_cpu();          // ops/moe/cpu/register_moe.cpp
}  // namespace cpu

void register_cpu_kernels() {
  cpu::register_elementwise_cpu();
  cpu::register_factory_cpu();
  cpu::register_copy_cpu();
  cpu::register_reduce_cpu();
  cpu::register_softmax_cpu();
  cpu::register_norm_cpu();
  cpu::register_matmul_cpu();
  cpu::register_attention_cpu();
  cpu::register_index_cpu();
  cpu::register_sort_cpu();
  cpu::register_optim_cpu();
  cpu::register_moe_cpu();
}

}  // namespace hmoe::ops
