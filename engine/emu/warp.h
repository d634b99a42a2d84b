// Warp collectives for host compilation: shuffles, votes, __syncwarp, __reduce_*_sync
// and __match_*_sync, each a rendezvous of the lanes named in its mask.
#pragma once

#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "engine/emu/builtins.h"
#include "engine/emu/half.h"

namespace hmoe::emu::detail {

enum class WarpOp : uint8_t {
  shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp,
  reduce_add, reduce_min, reduce_max, reduce_and, reduce_or, reduce_xor, match_any, match_all, custom
};
// The value's type, so that lanes passing different types to one shuffle are caught
// and reductions know their signedness.
enum class ValueKind : uint8_t { none, i32, u32, i64, u64, f32, f64, f16, bf16, other };

template <typename T> constexpr ValueKind value_kind() {
  if constexpr (std::is_same_v<T, int>) return ValueKind::i32;
  else if constexpr (std::is_same_v<T, unsigned>) return ValueKind::u32;
  else if constexpr (std::is_same_v<T, long long> || std::is_same_v<T, long>) return ValueKind::i64;
  else if constexpr (std::is_same_v<T, unsigned long long> || std::is_same_v<T, unsigned long>) return ValueKind::u64;
  else if constexpr (std::is_same_v<T, float>) return ValueKind::f32;
  else if constexpr (std::is_same_v<T, double>) return ValueKind::f64;
  else if constexpr (std::is_same_v<T, __half>) return ValueKind::f16;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return ValueKind::bf16;
  else return ValueKind::other;
}

// Runs once, on the fiber of the last lane to arrive, for collectives the runtime
// does not compute itself (WMMA). values[lane] is each lane's per-lane word.
using WarpComplete = void (*)(const uint64_t* values, const uint64_t* shared, unsigned arrived);

struct WarpCall {
  WarpOp op = WarpOp::syncwarp;
  ValueKind kind = ValueKind::none;
  uint8_t size = 0;          // bytes of the value
  bool full_warp = false;    // every lane of the warp must take part (WMMA)
  unsigned mask = 0;
  int width = 32;
  uint64_t value = 0;        // this lane's value bits (or a pointer, for custom ops)
  uint64_t arg = 0;          // this lane's source lane / delta / lane mask
  uint64_t shared[3] = {};   // must agree across lanes (custom ops)
  const char* name = "";     // for messages
  WarpComplete complete = nullptr;
  std::source_location loc;
};

// Blocks the calling lane until every live lane of call.mask has made the matching
// call; returns this lane's result bits.
uint64_t warp_collective(const WarpCall& call);
// Lanes of the calling thread's warp that exist and have not exited.
unsigned live_lanes();

template <typename T>
inline uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp collectives move values of at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(static_cast<void*>(&v), &b, sizeof(T));
  return v;
}

template <typename T>
inline T shuffle(WarpOp op, const char* name, unsigned mask, T var, uint64_t arg, int width,
                 const std::source_location& loc) {
  WarpCall c;
  c.op = op;
  c.kind = value_kind<T>();
  c.size = uint8_t(sizeof(T));
  c.mask = mask;
  c.width = width;
  c.value = to_bits(var);
  c.arg = arg;
  c.name = name;
  c.loc = loc;
  return from_bits<T>(warp_collective(c));
}

inline uint64_t vote(WarpOp op, const char* name, unsigned mask, uint64_t value, ValueKind kind, uint8_t size,
                     const std::source_location& loc) {
  WarpCall c;
  c.op = op;
  c.kind = kind;
  c.size = size;
  c.mask = mask;
  c.value = value;
  c.name = name;
  c.loc = loc;
  return warp_collective(c);
}

}  // namespace hmoe::emu::detail

#define HMOE_EMU_LOC std::source_location loc = std::source_location::current()

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, HMOE_EMU_LOC) {
  return ::hmoe::emu::detail::shuffle(::hmoe::emu::detail::WarpOp::shfl, "__shfl_sync", mask, var,
                                      uint64_t(uint32_t(src_lane)), width, loc);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, HMOE_EMU_LOC) {
  return ::hmoe::emu::detail::shuffle(::hmoe::emu::detail::WarpOp::shfl_up, "__shfl_up_sync", mask, var, delta, width,
                                      loc);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, HMOE_EMU_LOC) {
  return ::hmoe::emu::detail::shuffle(::hmoe::emu::detail::WarpOp::shfl_down, "__shfl_down_sync", mask, var, delta,
                                      width, loc);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, HMOE_EMU_LOC) {
  return ::hmoe::emu::detail::shuffle(::hmoe::emu::detail::WarpOp::shfl_xor, "__shfl_xor_sync", mask, var,
                                      uint64_t(uint32_t(lane_mask)), width, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred, HMOE_EMU_LOC) {
  using namespace ::hmoe::emu::detail;
  return unsigned(vote(WarpOp::ballot, "__ballot_sync", mask, pred != 0, ValueKind::none, 0, loc));
}
inline int __any_sync(unsigned mask, int pred, HMOE_EMU_LOC) {
  using namespace ::hmoe::emu::detail;
  return int(vote(WarpOp::any, "__any_sync", mask, pred != 0, ValueKind::none, 0, loc));
}
inline int __all_sync(unsigned mask, int pred, HMOE_EMU_LOC) {
  using namespace ::hmoe::emu::detail;
  return int(vote(WarpOp::all, "__all_sync", mask, pred != 0, ValueKind::none, 0, loc));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, HMOE_EMU_LOC) {
  using namespace ::hmoe::emu::detail;
  vote(WarpOp::syncwarp, "__syncwarp", mask, 0, ValueKind::none, 0, loc);
}
// Without convergence tracking the emulator reports the warp's live lanes; a kernel
// that calls this inside a divergent branch gets more lanes than on a GPU (see README).
inline unsigned __activemask() { return ::hmoe::emu::detail::live_lanes(); }

#define HMOE_EMU_REDUCE(fn, op, T)                                                                          \
  inline T fn(unsigned mask, T value, HMOE_EMU_LOC) {                                                      \
    using namespace ::hmoe::emu::detail;                                                                    \
    return T(vote(WarpOp::op, #fn, mask, to_bits(value), value_kind<T>(), uint8_t(sizeof(T)), loc));       \
  }
HMOE_EMU_REDUCE(__reduce_add_sync, reduce_add, unsigned)
HMOE_EMU_REDUCE(__reduce_add_sync, reduce_add, int)
HMOE_EMU_REDUCE(__reduce_min_sync, reduce_min, unsigned)
HMOE_EMU_REDUCE(__reduce_min_sync, reduce_min, int)
HMOE_EMU_REDUCE(__reduce_max_sync, reduce_max, unsigned)
HMOE_EMU_REDUCE(__reduce_max_sync, reduce_max, int)
HMOE_EMU_REDUCE(__reduce_and_sync, reduce_and, unsigned)
HMOE_EMU_REDUCE(__reduce_or_sync, reduce_or, unsigned)
HMOE_EMU_REDUCE(__reduce_xor_sync, reduce_xor, unsigned)
#undef HMOE_EMU_REDUCE

template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, HMOE_EMU_LOC) {
  using namespace ::hmoe::emu::detail;
  return unsigned(vote(WarpOp::match_any, "__match_any_sync", mask, to_bits(value), value_kind<T>(),
                       uint8_t(sizeof(T)), loc));
}
template <typename T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred, HMOE_EMU_LOC) {
  using namespace ::hmoe::emu::detail;
  const unsigned r = unsigned(vote(WarpOp::match_all, "__match_all_sync", mask, to_bits(value), value_kind<T>(),
                                   uint8_t(sizeof(T)), loc));
  *pred = r != 0;
  return r;
}
