// Shared helpers of the MoE CPU kernels: f32/f64 dispatch and integer-id access.
#pragma once

#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "engine/thread_pool.h"

namespace hmoe::ops::cpu::moe_detail {

// The MoE kernels compute in f32 or f64 (ops widen half types before dispatching).
template <typename Fn>
decltype(auto) dispatch_real(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    default: detail::unsupported_dtype(op, t);
  }
}

// Calls fn.template operator()<I>() with I = int32_t or int64_t matching the tensor.
template <typename Fn>
decltype(auto) dispatch_ids(const Tensor& ids, const char* op, Fn&& fn) {
  switch (ids.dtype()) {
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    default: detail::unsupported_dtype(op, ids.dtype());
  }
}

// Rows per parallel task so that one task touches about `work` elements.
inline int64_t row_grain(int64_t row_elems, int64_t work = 16384) {
  return row_elems <= 0 ? work : (work + row_elems - 1) / row_elems;
}

template <typename T>
const T* opt_ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace hmoe::ops::cpu::moe_detail
