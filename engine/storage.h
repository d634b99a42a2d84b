/// @file
/// Storage: one allocation on one device, shared by every tensor view of it (owned, or
/// memory of the caller's wrapped with its deleter); and the allocator registry that
/// backends fill (the CPU one is built in).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "engine/device.h"
#include "engine/memory/caching_allocator.h"

namespace hmoe {

/// An owning pointer whose deleter the allocator chose.
using DataPtr = std::unique_ptr<void, void (*)(void*)>;

/// A device backend's memory: allocation, copies, memset and pool statistics. One per
/// device type, registered with register_allocator.
class Allocator {
 public:
  virtual ~Allocator() = default;
  /// nbytes on device device_index; the pointer frees itself.
  virtual DataPtr allocate(size_t nbytes, int device_index) = 0;
  /// Copies between host and this device (or within it); synchronous for the caller.
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) = 0;
  /// Sets nbytes at dst, on this device, to the byte value.
  virtual void memset(void* dst, int value, size_t nbytes) = 0;
  /// The device's memory pool: bytes handed out now and at the peak (the profiler's memory
  /// columns). The CPU pool counts only its cached blocks (kCpuCacheMin and larger).
  virtual memory::AllocatorStats memory_stats(int device_index) const = 0;
  virtual void reset_peak_stats(int device_index) = 0;  ///< the peak restarts from the current use
};

/// The allocator for a device type; throws hmoe::Error if that backend is not built.
Allocator& allocator_for(DeviceType t);
/// A backend's allocator for its device type: called from the backend's registration
/// (the CPU's is built in).
void register_allocator(DeviceType t, Allocator* a);
/// Registers every backend built in, once: its allocator (register_allocator) and its
/// kernels (the dispatch registry). allocator_for and every dispatch stub call it first.
/// Declared by the engine, defined by the ops layer (ops/dispatch.cpp), whose backend
/// lists are explicit calls, so a static link keeps every backend.
void ensure_backends_registered();

/// CPU blocks of at least this many bytes are recycled through a caching pool (the
/// CachingAllocator of the CUDA backend, over host memory) instead of going back to the
/// system; HMOE_CPU_CACHE=0 (read once) sends every block to malloc/free instead.
inline constexpr size_t kCpuCacheMin = size_t(1) << 20;
/// The CPU caching pool's statistics.
memory::AllocatorStats cpu_cache_stats();
void cpu_empty_cache();       ///< returns the pool's wholly free segments to the system
void cpu_cache_reset_peak();  ///< peak statistics restart from the current use

/// One allocation on one device, shared by every tensor view of it.
class Storage {
 public:
  /// nbytes of new, uninitialised memory on device.
  Storage(size_t nbytes, Device device);
  /// The caller's memory (nbytes at data, on device), not copied; deleter(data) runs once,
  /// when the storage dies (no deleter: the caller keeps the memory alive that long).
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  /// The first byte.
  void* data() const { return data_.get(); }
  /// The size in bytes.
  size_t nbytes() const { return nbytes_; }
  /// Where the memory lives.
  Device device() const { return device_; }

  /// Bumped by every in-place write, so autograd can tell a saved tensor was modified.
  uint64_t version() const { return version_; }
  /// Records an in-place write (see version()).
  void bump_version() { ++version_; }

 private:
  DataPtr data_;
  std::function<void(void*)> deleter_;  ///< the caller's memory: its deleter (data_ frees nothing)
  size_t nbytes_;
  Device device_;
  uint64_t version_ = 0;
};

}  // namespace hmoe
