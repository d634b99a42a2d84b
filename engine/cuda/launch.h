// HMOE_LAUNCH_CHECKED: launch a kernel and check it in one line (kernel sources only;
// include after engine/cuda/device_code.h). Grid and block may be integers or dim3.
#pragma once

#include "engine/cuda/device_code.h"
#include "engine/cuda/runtime.h"

// HMOE_LAUNCH_CHECKED(kernel, grid, block, smem, stream, args...): HMOE_LAUNCH, then
// hmoe::cuda::check_launch naming the kernel and its configuration. A template kernel
// goes through a pointer variable (auto k = &my_kernel<float>;), as with HMOE_LAUNCH.
#define HMOE_LAUNCH_CHECKED(kernel, grid, block, smem, stream, ...)                                           \
  do {                                                                                                         \
    const dim3 hmoe_grid_ = static_cast<dim3>((grid)), hmoe_block_ = static_cast<dim3>((block));               \
    const size_t hmoe_smem_ = (smem);                                                                          \
    HMOE_LAUNCH(kernel, hmoe_grid_, hmoe_block_, hmoe_smem_, stream __VA_OPT__(, ) __VA_ARGS__);             \
    ::hmoe::cuda::check_launch(#kernel, hmoe_grid_.x, hmoe_grid_.y, hmoe_grid_.z, hmoe_block_.x, hmoe_block_.y, \
                               hmoe_block_.z, hmoe_smem_);                                                     \
  } while (0)
