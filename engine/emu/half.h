// __half and __nv_bfloat16 (plus their pair types) for host compilation, with exact
// round-to-nearest-even conversions matching cuda_fp16.h / cuda_bf16.h.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

#include "engine/emu/builtins.h"
#include "engine/half_bits.h"

namespace hmoe::emu::detail {

using ::hmoe::half_bits::bf16_bits_to_float;
using ::hmoe::half_bits::float_to_bf16_bits;
using ::hmoe::half_bits::float_to_half_bits;
using ::hmoe::half_bits::half_bits_to_float;

// The 16-bit float types share one template; Tag picks the format. Arithmetic
// between two values of the same type rounds through float like the device does.
// The operators are constrained templates so that `h + 1.0f` is plain float math
// instead of an ambiguity between the two implicit conversions.
template <bool IsBf16>
struct Float16 {
  uint16_t __x = 0;  // CUDA's name for the raw bits

  Float16() = default;
  constexpr Float16(float f) : __x(IsBf16 ? float_to_bf16_bits(f) : float_to_half_bits(f)) {}  // NOLINT
  template <typename T> requires(std::is_arithmetic_v<T> && !std::is_same_v<T, float>)
  constexpr Float16(T v) : Float16(float(v)) {}  // NOLINT
  constexpr operator float() const { return IsBf16 ? bf16_bits_to_float(__x) : half_bits_to_float(__x); }  // NOLINT
  static constexpr Float16 from_bits(uint16_t b) {
    Float16 h;
    h.__x = b;
    return h;
  }
};

template <typename A, typename B>
concept SameFloat16 = std::is_same_v<A, B> && (std::is_same_v<A, Float16<true>> || std::is_same_v<A, Float16<false>>);

template <typename A, typename B> requires SameFloat16<A, B>
constexpr A operator+(A a, B b) { return A(float(a) + float(b)); }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr A operator-(A a, B b) { return A(float(a) - float(b)); }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr A operator*(A a, B b) { return A(float(a) * float(b)); }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr A operator/(A a, B b) { return A(float(a) / float(b)); }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr A& operator+=(A& a, B b) { return a = a + b; }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr A& operator*=(A& a, B b) { return a = a * b; }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr bool operator==(A a, B b) { return float(a) == float(b); }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr bool operator<(A a, B b) { return float(a) < float(b); }
template <typename A, typename B> requires SameFloat16<A, B>
constexpr bool operator>(A a, B b) { return float(a) > float(b); }
template <typename A> requires SameFloat16<A, A>
constexpr A operator-(A a) { return A::from_bits(uint16_t(a.__x ^ 0x8000u)); }

}  // namespace hmoe::emu::detail

using __half = ::hmoe::emu::detail::Float16<false>;
using __nv_bfloat16 = ::hmoe::emu::detail::Float16<true>;
using half = __half;
using nv_bfloat16 = __nv_bfloat16;

struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
using half2 = __half2;
using nv_bfloat162 = __nv_bfloat162;

inline constexpr __half __float2half(float f) { return __half(f); }
inline constexpr __half __float2half_rn(float f) { return __half(f); }
inline constexpr float __half2float(__half h) { return float(h); }
inline constexpr __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline constexpr __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline constexpr float __bfloat162float(__nv_bfloat16 b) { return float(b); }
inline constexpr __half __ushort_as_half(unsigned short b) { return __half::from_bits(b); }
inline constexpr unsigned short __half_as_ushort(__half h) { return h.__x; }
inline constexpr __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return __nv_bfloat16::from_bits(b); }
inline constexpr unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline constexpr __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline constexpr __half2 __float22half2_rn(float2 v) { return __half2{__half(v.x), __half(v.y)}; }
inline constexpr float2 __half22float2(__half2 v) { return float2{float(v.x), float(v.y)}; }
inline constexpr __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(b)};
}
inline constexpr __nv_bfloat162 __float22bfloat162_rn(float2 v) {
  return __nv_bfloat162{__nv_bfloat16(v.x), __nv_bfloat16(v.y)};
}
inline constexpr float2 __bfloat1622float2(__nv_bfloat162 v) { return float2{float(v.x), float(v.y)}; }
inline constexpr __half __hadd(__half a, __half b) { return a + b; }
inline constexpr __half __hmul(__half a, __half b) { return a * b; }
inline constexpr __half __hfma(__half a, __half b, __half c) { return __half(float(a) * float(b) + float(c)); }
inline constexpr __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return a + b; }
inline constexpr __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return a * b; }
inline constexpr __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __nv_bfloat16(float(a) * float(b) + float(c));
}
