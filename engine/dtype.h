/// @file
/// DType (the element types a tensor can hold), their sizes and names, and the
/// bf16 / f16 storage types with exact round-to-nearest-even conversion.
#pragma once

#include <cstdint>
#include <cstring>
#include <ostream>
#include <string_view>

#include "engine/half_bits.h"

namespace hmoe {

/// The element types a tensor can hold.
enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, b8 };

/// The number of DType values.
inline constexpr int kNumDTypes = 7;

/// Bytes per element of t.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::b8: return 1;
  }
  return 0;
}

/// The name of t as configs and messages spell it ("f32", "bool", ...).
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::b8: return "bool";
  }
  return "?";
}

/// Whether t is a floating type (f32, f64, bf16, f16).
constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
/// Whether t is an integer type (i32, i64).
constexpr bool is_integral(DType t) { return t == DType::i32 || t == DType::i64; }

/// The dtype that a binary op between a and b computes in (floats win, wider wins;
/// bf16 with f16 goes to f32 since neither holds the other).
DType promote(DType a, DType b);

/// Prints the dtype's name.
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

/// bfloat16: the upper 16 bits of an IEEE f32.
struct bf16 {
  uint16_t bits = 0;  ///< the bit pattern
  /// Zero.
  bf16() = default;
  /// Rounds f to nearest even.
  bf16(float f) : bits(half_bits::float_to_bf16_bits(f)) {}                // NOLINT(google-explicit-constructor)
  /// The exact f32 value.
  operator float() const { return half_bits::bf16_bits_to_float(bits); }  // NOLINT(google-explicit-constructor)
  /// The bits of f rounded to nearest even.
  static uint16_t from_float(float f) { return half_bits::float_to_bf16_bits(f); }
};

/// IEEE binary16.
struct f16 {
  uint16_t bits = 0;  ///< the bit pattern
  /// Zero.
  f16() = default;
  /// Rounds f to nearest even.
  f16(float f) : bits(half_bits::float_to_half_bits(f)) {}                // NOLINT(google-explicit-constructor)
  /// The exact f32 value.
  operator float() const { return half_bits::half_bits_to_float(bits); }  // NOLINT(google-explicit-constructor)
  /// The bits of f rounded to nearest even.
  static uint16_t from_float(float f) { return half_bits::float_to_half_bits(f); }
  /// The f32 value of the bits h.
  static float to_float(uint16_t h) { return half_bits::half_bits_to_float(h); }
};

/// The DType of the C++ type T (float, double, bf16, f16, int32_t, int64_t, bool).
template <typename T>
struct dtype_of;
/// @cond INTERNAL
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::b8; };
/// @endcond

/// @cond INTERNAL
template <typename T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <> struct compute_type<f16> { using type = float; };
/// @endcond
/// The type arithmetic on T happens in: half types compute in f32.
template <typename T> using compute_t = typename compute_type<T>::type;

}  // namespace hmoe

/// @cond INTERNAL
// detail::dispatch_<set>(dtype, "op", [&]<typename scalar_t>() { ... }) calls the lambda
// with scalar_t bound to the C++ type of dtype, or throws naming the op and dtype when it
// is outside the set: float = f32 f64 bf16 f16; real = f32 f64; numeric = float + i32
// i64; all = numeric + b8; index = i32 i64. The CUDA kernels' versions, with the
// kernel-side types, are built on these (ops/cuda/kernel_utils.cuh).
#define HMOE_DTYPE_CASE_(DT, T) \
  case ::hmoe::DType::DT:       \
    return fn.template operator()<T>();

namespace hmoe::detail {
[[noreturn]] void unsupported_dtype(const char* op, DType t);

/// Each set is built from the smaller ones, so every type is listed once.
template <typename Fn>
decltype(auto) dispatch_real(DType t, const char* op, Fn&& fn) {
  switch (t) {
    HMOE_DTYPE_CASE_(f32, float)
    HMOE_DTYPE_CASE_(f64, double)
    default: unsupported_dtype(op, t);
  }
}
template <typename Fn>
decltype(auto) dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    HMOE_DTYPE_CASE_(bf16, ::hmoe::bf16)
    HMOE_DTYPE_CASE_(f16, ::hmoe::f16)
    default: return dispatch_real(t, op, fn);
  }
}
template <typename Fn>
decltype(auto) dispatch_index(DType t, const char* op, Fn&& fn) {
  switch (t) {
    HMOE_DTYPE_CASE_(i32, int32_t)
    HMOE_DTYPE_CASE_(i64, int64_t)
    default: unsupported_dtype(op, t);
  }
}
template <typename Fn>
decltype(auto) dispatch_numeric(DType t, const char* op, Fn&& fn) {
  if (t == DType::i32 || t == DType::i64) return dispatch_index(t, op, fn);
  return dispatch_float(t, op, fn);
}
template <typename Fn>
decltype(auto) dispatch_all(DType t, const char* op, Fn&& fn) {
  if (t == DType::b8) return fn.template operator()<bool>();
  return dispatch_numeric(t, op, fn);
}
}  // namespace hmoe::detail
/// @endcond
