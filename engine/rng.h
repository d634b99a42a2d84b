/// @file
/// Counter-based random numbers: Philox 4x32-10 keyed by (seed, offset). Each value
/// is a pure function of (seed, counter, index), so CPU and CUDA kernels draw the
/// same stream and the result never depends on thread count or launch shape.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HMOE_HD __host__ __device__
#else
#define HMOE_HD
#endif

namespace hmoe {

/// One Philox block: four 32-bit words.
struct Philox4 {
  uint32_t v[4];  ///< the words
};

/// The Philox 4x32-10 block at counter (counter_lo, counter_hi) under key.
HMOE_HD inline Philox4 philox4x32_10(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

/// Uniform in (0, 1]: never 0, so log() is safe.
HMOE_HD inline float u32_to_unit_open0(uint32_t x) { return (float(x >> 8) + 1.0f) * (1.0f / 16777216.0f); }
/// Uniform double in (0, 1] from 53 bits of (hi, lo): never 0.
HMOE_HD inline double u64_to_unit_open0(uint32_t hi, uint32_t lo) {
  const uint64_t x = (uint64_t(hi) << 21) ^ (lo >> 11);
  return (double(x & ((uint64_t(1) << 53) - 1)) + 1.0) * (1.0 / 9007199254740992.0);
}

/// The stream tag a draw carries in the counter's high word, so the kinds of draw at
/// one (seed, offset) are independent.
enum class RngStream : uint32_t { uniform = 1, normal = 2, dropout = 3, noise = 4 };

/// Element i of the stream starting at `offset`, uniform in (0, 1]: one Philox block per
/// element, so any element is computable alone. The counter's high word carries a stream tag.
HMOE_HD inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t i, RngStream s = RngStream::uniform) {
  return u32_to_unit_open0(philox4x32_10(offset + i, uint64_t(s), seed).v[0]);
}

/// Element i of the uniform stream as a double in (0, 1], from 53 bits.
HMOE_HD inline double philox_uniform_f64(uint64_t seed, uint64_t offset, uint64_t i) {
  const Philox4 r = philox4x32_10(offset + i, uint64_t(RngStream::uniform), seed);
  return u64_to_unit_open0(r.v[0], r.v[1]);
}

/// Element i of the normal stream: standard normal by Box-Muller on the block's two
/// 53-bit uniforms.
HMOE_HD inline double philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  const Philox4 r = philox4x32_10(offset + i, uint64_t(RngStream::normal), seed);
  const double u1 = u64_to_unit_open0(r.v[0], r.v[1]);
  const double u2 = u64_to_unit_open0(r.v[2], r.v[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

/// A seed and a position in its stream. Each draw of n values takes offsets
/// [offset, offset + n) and advances; copying a Generator forks an identical stream.
class Generator {
 public:
  /// A generator at `offset` of seed's stream.
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  /// The seed.
  uint64_t seed() const { return seed_; }
  /// The next counter a draw takes.
  uint64_t offset() const { return offset_; }
  /// Moves the generator to (seed, offset).
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  /// Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) {
    const uint64_t o = offset_;
    offset_ += n;
    return o;
  }
  /// A draw of `total_rows` rows of `row_numel` values, of which the caller makes only
  /// rows [first_row, ...): a generator positioned at first_row's values, this one advanced
  /// past every row. A process holding part of a batch thus draws exactly the values one
  /// process holding the whole batch draws for those rows.
  Generator take_rows(uint64_t first_row, uint64_t row_numel, uint64_t total_rows) {
    const uint64_t o = advance(total_rows * row_numel);
    return Generator(seed_, o + first_row * row_numel);
  }

 private:
  uint64_t seed_;
  uint64_t offset_;
};

}  // namespace hmoe
