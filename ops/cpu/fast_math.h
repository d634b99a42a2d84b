// Branch-free float exp and erf that the compiler vectorises (std::exp / std::erf are
// scalar library calls). Max relative error about 2e-7 (exp) and 1.2e-7 (erf), well
// inside f32 tolerance; f64 keeps the library functions.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace hmoe::ops::cpu {

// exp(x) for |x| <= 88: range reduction to [-ln2/2, ln2/2] (Cody-Waite), a degree-6
// polynomial, and 2^k assembled in the exponent bits.
inline float expf_core(float x) {
  const float k = std::nearbyint(x * 1.44269504088896341f);
  const float r = x - k * 0.693359375f - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(k) + 127) << 23;
  return y * std::bit_cast<float>(e);
}

inline float fast_expf(float x) {
  const bool big = x > 88.0f;          // exp(x) = exp(x/2)^2 overflows to inf as it should
  const bool tiny = x < -87.33654f;    // below the smallest normal float: 0
  const float xc = tiny ? 0.0f : (big ? x * 0.5f : x);
  const float y = expf_core(xc);
  return tiny ? 0.0f : (big ? y * y : y);
}

// erf via the Numerical Recipes erfc Chebyshev fit.
inline float fast_erff(float x) {
  const float z = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float poly =
      -1.26551223f +
      t * (1.00002368f +
           t * (0.37409196f +
                t * (0.09678418f +
                     t * (-0.18628806f +
                          t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  const float ans = t * fast_expf(-z * z + poly);
  return x >= 0.0f ? 1.0f - ans : ans - 1.0f;
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
