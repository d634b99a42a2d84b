// Storage and the allocator registry, with the built-in CPU allocator (64-byte
// aligned, so vector loads never straddle a cache line at the start of a tensor;
// large blocks recycled through a caching pool whose big segments ask for huge pages).
#include "engine/storage.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "engine/error.h"
#include "engine/memory/caching_allocator.h"

namespace hmoe {
namespace {

// Host memory for the CPU cache's segments (64-byte aligned; no streams, so every
// "event" has completed).
class HostRaw final : public memory::RawAllocator {
 public:
  void* raw_alloc(size_t nbytes) override {
#ifdef __linux__
    // Segments of 4 MiB and more: 2 MiB aligned and offered to transparent huge pages.
    // A GEMM packing panels across the rows of a big activation touches one 4 KiB page
    // per row; with 2 MiB pages its TLB misses mostly vanish (the layer's grouped GEMMs
    // measured ~3% faster). Where THP is off this is plain aligned memory.
    constexpr size_t kHuge = size_t(2) << 20;
    if (nbytes >= 2 * kHuge) {
      const size_t bytes = (nbytes + kHuge - 1) / kHuge * kHuge;
      void* p = std::aligned_alloc(kHuge, bytes);
      if (p) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: its failure changes nothing
      return p;
    }
#endif
    return std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
  }
  void raw_free(void* p) override { std::free(p); }
  uint64_t record_event(memory::StreamId) override { return 0; }
  bool event_done(uint64_t) override { return true; }
  void release_event(uint64_t) override {}
};

struct HostCache {
  HostRaw raw;
  memory::CachingAllocator cache{raw};
};

// Created on first use and never destroyed: tensors held by static objects are freed
// after main returns.
HostCache& host_cache() {
  alignas(HostCache) static unsigned char storage[sizeof(HostCache)];
  static HostCache* c = ::new (storage) HostCache();
  return *c;
}

bool host_cache_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("HMOE_CPU_CACHE");
    return !(v && std::string(v) == "0");
  }();
  return on;
}

void free_cached(void* p) { host_cache().cache.free(p); }

// Blocks of kCpuCacheMin bytes or more come from a caching pool: a freed activation is
// reused by the next one of its size, already paged in (a fresh large malloc is an
// mmap whose every page faults on first touch, which costs as much as a memory-bound
// kernel's work). Smaller ones go to malloc, which already recycles them.
class CpuAllocator final : public Allocator {
 public:
  DataPtr allocate(size_t nbytes, int /*device_index*/) override {
    if (nbytes == 0) return DataPtr(nullptr, &noop);
    const size_t rounded = (nbytes + 63) / 64 * 64;
    if (rounded >= kCpuCacheMin && host_cache_enabled())
      return DataPtr(host_cache().cache.allocate(rounded, 0), &free_cached);
    void* p = std::aligned_alloc(64, rounded);
    HMOE_CHECK(p != nullptr, "cpu allocator: out of memory allocating ", nbytes, " bytes");
    return DataPtr(p, &std::free);
  }
  void copy(void* dst, Device, const void* src, Device, size_t nbytes) override {
    if (nbytes) std::memcpy(dst, src, nbytes);
  }
  void memset(void* dst, int value, size_t nbytes) override {
    if (nbytes) std::memset(dst, value, nbytes);
  }
  memory::AllocatorStats memory_stats(int /*device_index*/) const override { return cpu_cache_stats(); }
  void reset_peak_stats(int /*device_index*/) override { cpu_cache_reset_peak(); }

 private:
  static void noop(void*) {}
};

// The CPU allocator is built in; every other device's comes from its backend's
// registration (ensure_backends_registered).
std::array<Allocator*, kNumDeviceTypes>& registry() {
  static CpuAllocator cpu;
  static std::array<Allocator*, kNumDeviceTypes> table{&cpu, nullptr};
  return table;
}

}  // namespace

Allocator& allocator_for(DeviceType t) {
  ensure_backends_registered();
  Allocator* a = registry()[size_t(t)];
  HMOE_CHECK(a != nullptr, "device ", Device{t, 0}.str(),
             " is not available: this build of hmoe has no backend for it");
  return *a;
}

void register_allocator(DeviceType t, Allocator* a) { registry()[size_t(t)] = a; }

memory::AllocatorStats cpu_cache_stats() { return host_cache().cache.stats(); }
void cpu_empty_cache() { host_cache().cache.empty_cache(); }
void cpu_cache_reset_peak() { host_cache().cache.reset_peak_stats(); }

Storage::Storage(size_t nbytes, Device device)
    : data_(allocator_for(device.type).allocate(nbytes, device.index)), nbytes_(nbytes), device_(device) {}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data, [](void*) {}), deleter_(std::move(deleter)), nbytes_(nbytes), device_(device) {}

Storage::~Storage() {
  if (deleter_) deleter_(data_.get());
}

}  // namespace hmoe
