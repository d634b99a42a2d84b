// Shared helpers of the MoE CPU kernels: row grains and optional operands. (They
// dispatch with engine/dtype.h: detail::dispatch_real, f32/f64, as the MoE kernels
// compute in the storage type after the ops widen half types; dispatch_index for ids.)
#pragma once

#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "engine/thread_pool.h"

namespace hmoe::ops::cpu::moe_detail {

// Rows per parallel task so that one task touches about `work` elements.
inline int64_t row_grain(int64_t row_elems, int64_t work = 16384) {
  return row_elems <= 0 ? work : (work + row_elems - 1) / row_elems;
}

template <typename T>
const T* opt_ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace hmoe::ops::cpu::moe_detail
