// DType promotion and dtype errors.
#include "engine/dtype.h"

#include "engine/error.h"

namespace hmoe {

DType promote(DType a, DType b) {
  if (a == b) return a;
  auto rank = [](DType t) {
    switch (t) {
      case DType::b8: return 0;
      case DType::i32: return 1;
      case DType::i64: return 2;
      case DType::bf16: return 3;
      case DType::f16: return 3;
      case DType::f32: return 4;
      case DType::f64: return 5;
    }
    return 0;
  };
  if ((a == DType::bf16 && b == DType::f16) || (a == DType::f16 && b == DType::bf16)) return DType::f32;
  return rank(a) >= rank(b) ? a : b;
}

namespace detail {
void unsupported_dtype(const char* op, DType t) {
  throw Error(concat(op, ": dtype ", dtype_name(t), " is not supported"));
}
}  // namespace detail

}  // namespace hmoe
