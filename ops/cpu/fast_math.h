// Branch-free float exp and erf that the compiler vectorises (std::exp / std::erf are
// scalar library calls). Max relative error about 2e-7 (exp), absolute 4.2e-7 (erf), well
// inside f32 tolerance; f64 keeps the library functions.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace hmoe::ops::cpu {

// exp(x) for x in [-87.34, ln(FLT_MAX)]: range reduction to [-ln2/2, ln2/2]
// (Cody-Waite), a degree-6 polynomial, and 2^k assembled in the exponent bits. At the
// top k reaches 128, whose 2^k is not a float: it is applied as 2^127 * 2.
inline float expf_core(float x) {
  // Round to nearest by the 1.5 * 2^23 shifter (std::nearbyint is a library call that
  // stops the loop from vectorising); exact for |x * log2(e)| < 2^22.
  constexpr float kShift = 12582912.0f;
  const float k = (x * 1.44269504088896341f + kShift) - kShift;
  const float r = x - k * 0.693359375f - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t ki = static_cast<int32_t>(k);
  const int32_t e = ((ki > 127 ? 127 : ki) + 127) << 23;
  return y * std::bit_cast<float>(e) * (ki > 127 ? 2.0f : 1.0f);
}

// The whole float range: below the smallest normal float 0, above ln(FLT_MAX) +inf,
// NaN stays NaN.
inline float fast_expf(float x) {
  constexpr float kHi = 88.7228394f;  // ln(FLT_MAX)
  const float y = expf_core(x > kHi ? kHi : x);
  return x < -87.33654f ? 0.0f : (x > kHi ? std::numeric_limits<float>::infinity() : y);
}

// erf as x P(x^2) / Q(x^2) on [-4, 4] (erf is +-1 to float precision beyond): a
// rational minimax fit, max absolute error 4.2e-7 against std::erf (checked on a
// 1e-5 grid over [-6, 6]); no exp and one division, so it vectorises cheaply.
inline float fast_erff(float x) {
  x = std::clamp(x, -4.0f, 4.0f);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return x * p / q;
}

template <typename T>
inline T exp_(T x) {
  if constexpr (std::is_same_v<T, float>) return fast_expf(x);
  else return std::exp(x);
}
template <typename T>
inline T erf_(T x) {
  if constexpr (std::is_same_v<T, float>) return fast_erff(x);
  else return std::erf(x);
}

}  // namespace hmoe::ops::cpu
