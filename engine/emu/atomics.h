// CUDA atomics for host compilation: real (relaxed) atomics through std::atomic_ref,
// because blocks of one launch run on several OS threads at once.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>
#include <type_traits>

#include "engine/emu/builtins.h"
#include "engine/emu/half.h"

namespace hmoe::emu::detail {

template <typename T>
inline std::atomic_ref<T> aref(T* p) {
  return std::atomic_ref<T>(*p);
}

// Read-modify-write through a compare-exchange loop, for operations std::atomic_ref
// lacks (min/max, 16-bit floats, wrapping increment).
template <typename T, typename F>
inline T atomic_update(T* p, F f) {
  preemption_point();
  auto a = aref(p);
  T old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
  }
  return old;
}

// 16-bit floats update through their raw bits.
template <typename H, typename F>
inline H atomic_update16(H* p, F f) {
  preemption_point();
  auto a = aref(reinterpret_cast<uint16_t*>(p));
  uint16_t old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, f(H::from_bits(old)).__x, std::memory_order_relaxed)) {
  }
  return H::from_bits(old);
}

template <typename T>
concept AtomicInt = std::is_same_v<T, int> || std::is_same_v<T, unsigned int> ||
                    std::is_same_v<T, unsigned long long> || std::is_same_v<T, long long>;
template <typename T>
concept AtomicAddable = AtomicInt<T> || std::is_same_v<T, float> || std::is_same_v<T, double>;

}  // namespace hmoe::emu::detail

template <typename T> requires ::hmoe::emu::detail::AtomicAddable<T>
inline T atomicAdd(T* p, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  return ::hmoe::emu::detail::aref(p).fetch_add(v, std::memory_order_relaxed);
}
inline __half atomicAdd(__half* p, __half v) {
  return ::hmoe::emu::detail::atomic_update16(p, [v](__half o) { return __half(float(o) + float(v)); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  return ::hmoe::emu::detail::atomic_update16(p, [v](__nv_bfloat16 o) { return __nv_bfloat16(float(o) + float(v)); });
}
template <typename T> requires ::hmoe::emu::detail::AtomicInt<T>
inline T atomicSub(T* p, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  return ::hmoe::emu::detail::aref(p).fetch_sub(v, std::memory_order_relaxed);
}
template <typename T> requires ::hmoe::emu::detail::AtomicInt<T>
inline T atomicMax(T* p, std::type_identity_t<T> v) {
  return ::hmoe::emu::detail::atomic_update(p, [v](T o) { return o < v ? v : o; });
}
template <typename T> requires ::hmoe::emu::detail::AtomicInt<T>
inline T atomicMin(T* p, std::type_identity_t<T> v) {
  return ::hmoe::emu::detail::atomic_update(p, [v](T o) { return v < o ? v : o; });
}
template <typename T> requires(::hmoe::emu::detail::AtomicInt<T> || std::is_same_v<T, float>)
inline T atomicExch(T* p, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  return ::hmoe::emu::detail::aref(p).exchange(v, std::memory_order_relaxed);
}
template <typename T> requires(::hmoe::emu::detail::AtomicInt<T> || std::is_same_v<T, unsigned short>)
inline T atomicCAS(T* p, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  ::hmoe::emu::detail::aref(p).compare_exchange_strong(compare, v, std::memory_order_relaxed);
  return compare;  // holds the old value whether or not the exchange happened
}
template <typename T> requires ::hmoe::emu::detail::AtomicInt<T>
inline T atomicAnd(T* p, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  return ::hmoe::emu::detail::aref(p).fetch_and(v, std::memory_order_relaxed);
}
template <typename T> requires ::hmoe::emu::detail::AtomicInt<T>
inline T atomicOr(T* p, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  return ::hmoe::emu::detail::aref(p).fetch_or(v, std::memory_order_relaxed);
}
template <typename T> requires ::hmoe::emu::detail::AtomicInt<T>
inline T atomicXor(T* p, std::type_identity_t<T> v) {
  ::hmoe::emu::detail::preemption_point();
  return ::hmoe::emu::detail::aref(p).fetch_xor(v, std::memory_order_relaxed);
}
// ((old >= v) ? 0 : old + 1), as the CUDA Programming Guide defines it.
inline unsigned int atomicInc(unsigned int* p, unsigned int v) {
  return ::hmoe::emu::detail::atomic_update(p, [v](unsigned o) { return o >= v ? 0u : o + 1u; });
}
// (((old == 0) || (old > v)) ? v : old - 1)
inline unsigned int atomicDec(unsigned int* p, unsigned int v) {
  return ::hmoe::emu::detail::atomic_update(p, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1u; });
}

// Scoped variants behave like the device-wide ones here.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicCAS_block atomicCAS
#define atomicExch_block atomicExch

inline void __threadfence() {
  ::hmoe::emu::detail::preemption_point();
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_block() {
  ::hmoe::emu::detail::preemption_point();
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_system() { __threadfence(); }
