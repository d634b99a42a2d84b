// Storage and the allocator registry, with the built-in CPU allocator (64-byte
// aligned, so vector loads never straddle a cache line at the start of a tensor).
#include "engine/storage.h"

#include <array>
#include <cstdlib>
#include <cstring>

#include "engine/error.h"
#ifdef HMOE_WITH_CUDA_BACKEND
#include "engine/cuda/allocator.h"
#endif

namespace hmoe {
namespace {

class CpuAllocator final : public Allocator {
 public:
  DataPtr allocate(size_t nbytes, int /*device_index*/) override {
    if (nbytes == 0) return DataPtr(nullptr, &noop);
    const size_t rounded = (nbytes + 63) / 64 * 64;
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

 private:
  static void noop(void*) {}
};

std::array<Allocator*, kNumDeviceTypes>& registry() {
  static CpuAllocator cpu;
#ifdef HMOE_WITH_CUDA_BACKEND
  // The CUDA backend (real or emulated) is built in: its allocator is always there.
  static std::array<Allocator*, kNumDeviceTypes> table{&cpu, &cuda::device_allocator()};
#else
  static std::array<Allocator*, kNumDeviceTypes> table{&cpu, nullptr};
#endif
  return table;
}

}  // namespace

Allocator& allocator_for(DeviceType t) {
  Allocator* a = registry()[size_t(t)];
  HMOE_CHECK(a != nullptr, "device ", Device{t, 0}.str(), " is not available: this build of hmoe has no backend for it");
  return *a;
}

void register_allocator(DeviceType t, Allocator* a) { registry()[size_t(t)] = a; }

Storage::Storage(size_t nbytes, Device device)
    : data_(allocator_for(device.type).allocate(nbytes, device.index)), nbytes_(nbytes), device_(device) {}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    int idx = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      HMOE_CHECK(s[i] >= '0' && s[i] <= '9' && idx < 1000000, "bad device string '", s, "'");
      idx = idx * 10 + (s[i] - '0');
    }
    return Device::cuda(idx);
  }
  HMOE_FAIL("bad device string '", s, "': expected cpu, cuda or cuda:N");
}

}  // namespace hmoe
