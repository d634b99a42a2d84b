// The device memory behind Device::cuda(i): a CachingAllocator per device over the
// runtime's raw_malloc/raw_free (events for cross-stream reuse), output poisoning,
// per-tensor guard bytes under emulation, and the hmoe::Allocator of DeviceType::cuda.
#include "engine/cuda/allocator.h"

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

#include "engine/cuda/runtime.h"
#include "engine/cuda/runtime_backend.h"
#include "engine/error.h"

namespace hmoe::cuda {
namespace {

using backend::kMaxDevices;

// Segments come from the runtime; events are runtime Events keyed by a token.
class DeviceRaw final : public memory::RawAllocator {
 public:
  explicit DeviceRaw(int device) : device_(device) {}
  void* raw_alloc(size_t nbytes) override { return raw_malloc(nbytes, device_); }
  void raw_free(void* p) override { cuda::raw_free(p, device_); }
  uint64_t record_event(memory::StreamId s) override {
    Event e(device_, /*timing=*/false);
    if (!record_on_stream_id(e, s)) return 0;  // the stream is gone, so its work is done
    std::lock_guard<std::mutex> lk(mu_);
    const uint64_t id = next_++;
    events_.emplace(id, std::move(e));
    return id;
  }
  bool event_done(uint64_t event) override {
    if (event == 0) return true;
    std::lock_guard<std::mutex> lk(mu_);
    auto it = events_.find(event);
    return it == events_.end() || it->second.query();
  }
  void release_event(uint64_t event) override {
    std::lock_guard<std::mutex> lk(mu_);
    events_.erase(event);
  }

 private:
  int device_;
  std::mutex mu_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, Event> events_;
};

struct DeviceMemory {
  explicit DeviceMemory(int device) : raw(device), cache(raw) {}
  DeviceRaw raw;
  memory::CachingAllocator cache;
};

// One per device, created on first use and never destroyed: tensors held by static
// objects are freed after main returns, and cudaFree at exit is pointless anyway.
DeviceMemory& device_memory(int device) {
  check_device(device);
  HMOE_CHECK(device < kMaxDevices, "cuda: device ", device, " is beyond the ", kMaxDevices, " this build supports");
  struct Slot {
    std::once_flag once;
    alignas(DeviceMemory) unsigned char storage[sizeof(DeviceMemory)];
    DeviceMemory* mem = nullptr;
  };
  static std::array<Slot, kMaxDevices> slots;
  Slot& slot = slots[size_t(device)];
  std::call_once(slot.once, [&] { slot.mem = ::new (slot.storage) DeviceMemory(device); });
  return *slot.mem;
}

std::atomic<int>& poison_flag() {
  static std::atomic<int> flag = [] {
    const char* env = std::getenv("HMOE_CUDA_POISON");
    if (env && *env) return int(env[0] != '0');
    return int(is_emulated());
  }();
  return flag;
}

// --- per-tensor guards (emulated build) --------------------------------------------------
// Layout of a guarded block: [n][~n][canary ... ][user: n bytes][canary x kTensorGuard].
constexpr size_t kTensorGuard = 256;  // keeps the user pointer 256-byte aligned
constexpr unsigned char kTensorCanary = 0xD7;

void write_guards(char* block, size_t n) {
  const uint64_t nn = n, inv = ~nn;
  std::memset(block, kTensorCanary, kTensorGuard);
  std::memcpy(block, &nn, 8);
  std::memcpy(block + 8, &inv, 8);
  std::memset(block + kTensorGuard + n, kTensorCanary, kTensorGuard);
}

// Returns the user size; aborts with a report when a guard was overwritten.
size_t check_guards(char* block) {
  uint64_t nn = 0, inv = 0;
  std::memcpy(&nn, block, 8);
  std::memcpy(&inv, block + 8, 8);
  const char* user = block + kTensorGuard;
  long bad = 0;
  bool damaged = nn != ~inv;
  if (damaged) bad = -long(kTensorGuard);
  for (size_t i = 16; i < kTensorGuard && !damaged; ++i)
    if (static_cast<unsigned char>(block[i]) != kTensorCanary) {
      damaged = true;
      bad = long(i) - long(kTensorGuard);
    }
  for (size_t i = 0; i < kTensorGuard && !damaged; ++i)
    if (static_cast<unsigned char>(user[nn + i]) != kTensorCanary) {
      damaged = true;
      bad = long(nn + i);
    }
  if (damaged) {
    // Frees run in destructors, which cannot throw: report and stop, like ASan.
    std::fprintf(stderr,
                 "hmoe: cuda (emulated): guard bytes %s the device tensor memory of %llu bytes at %p were "
                 "overwritten (first damaged byte at offset %ld): a kernel wrote out of bounds\n",
                 bad < 0 ? "before" : "after", static_cast<unsigned long long>(nn), static_cast<const void*>(user),
                 bad);
    std::abort();
  }
  return nn;
}

template <int D>
void free_on_device(void* p) {
  if (!p) return;
  char* block = static_cast<char*>(p);
  if (tensor_guard_bytes()) {
    block -= kTensorGuard;
    check_guards(block);
  }
  device_memory(D).cache.free(block);
}

template <size_t... I>
constexpr std::array<void (*)(void*), sizeof...(I)> make_deleters(std::index_sequence<I...>) {
  return {&free_on_device<int(I)>...};
}
constexpr auto kDeleters = make_deleters(std::make_index_sequence<kMaxDevices>());

void noop_free(void*) {}

class CudaAllocator final : public Allocator {
 public:
  DataPtr allocate(size_t nbytes, int device) override {
    if (nbytes == 0) return DataPtr(nullptr, &noop_free);
    DeviceMemory& mem = device_memory(device);
    const Stream& s = current_stream(device);
    const size_t guard = tensor_guard_bytes();
    char* block = static_cast<char*>(mem.cache.allocate(nbytes + 2 * guard, s.id()));
    if (guard) write_guards(block, nbytes);
    char* user = block + guard;
    DataPtr out(user, kDeleters[size_t(device)]);
    if (poison_allocations()) memset_async(user, 0xFF, nbytes, s);
    return out;
  }

  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) override {
    if (nbytes == 0) return;
    if (dst_dev.is_cpu() && src_dev.is_cpu()) {
      std::memcpy(dst, src, nbytes);
    } else if (src_dev.is_cpu()) {
      const Stream& s = current_stream(dst_dev.index);
      memcpy_async(dst, src, nbytes, CopyKind::host_to_device, s);
      s.synchronize();
    } else if (dst_dev.is_cpu()) {
      const Stream& s = current_stream(src_dev.index);
      memcpy_async(dst, src, nbytes, CopyKind::device_to_host, s);
      s.synchronize();
    } else {
      // Between devices: the destination's pending work (e.g. its poisoning) first.
      if (dst_dev.index != src_dev.index) current_stream(dst_dev.index).synchronize();
      const Stream& s = current_stream(src_dev.index);
      memcpy_async(dst, src, nbytes, CopyKind::device_to_device, s);
      s.synchronize();
    }
  }

  void memset(void* dst, int value, size_t nbytes) override {
    if (nbytes == 0) return;
    const int device = pointer_device(dst);
    HMOE_CHECK(device >= 0, "cuda allocator: memset of ", dst, " which is not device memory");
    const Stream& s = current_stream(device);
    memset_async(dst, value, nbytes, s);
    s.synchronize();
  }

  memory::AllocatorStats memory_stats(int device) const override { return device_memory(device).cache.stats(); }
  void reset_peak_stats(int device) override { device_memory(device).cache.reset_peak_stats(); }
};

}  // namespace

memory::CachingAllocator& caching_allocator(int device) { return device_memory(device).cache; }

bool poison_allocations() { return poison_flag().load(std::memory_order_relaxed) != 0; }
void set_poison_allocations(bool on) { poison_flag().store(on ? 1 : 0, std::memory_order_relaxed); }

size_t tensor_guard_bytes() { return is_emulated() ? kTensorGuard : 0; }

Allocator& device_allocator() {
  static CudaAllocator a;
  return a;
}

}  // namespace hmoe::cuda
