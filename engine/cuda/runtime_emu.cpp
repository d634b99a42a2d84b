// The device runtime under emulation (HMOE_GPU=emu): one device (HMOE_EMU_DEVICES for
// more) whose memory is host memory with canary guard bytes around every raw allocation
// (checked on raw_free), a current device per thread that launches are checked against,
// streams that run in order (every call completes before it returns: kernels run
// synchronously on the SIMT emulator), and events that read the host clock. The device
// is a test instrument: a program uses it only when it opts in (HMOE_EMULATE_CUDA=1).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string_view>
#include <thread>

#include "engine/cuda/runtime.h"
#include "engine/cuda/runtime_backend.h"
#include "engine/emu/counters.h"
#include "engine/error.h"

namespace hmoe::cuda {
namespace {

// Guard bytes before and after each raw allocation. 256 keeps the user pointer as
// aligned as cudaMalloc's (256 bytes).
constexpr size_t kGuard = 256;
constexpr unsigned char kCanary = 0xCB;

struct RawBlock {
  char* base;     // what aligned_alloc returned
  size_t nbytes;  // the caller's size
  size_t total;   // guard + rounded size + guard
  int device;
};

// Live raw allocations by user pointer (ordered, so an address can be mapped to the
// allocation containing it).
struct RawRegistry {
  std::mutex mu;
  std::map<const char*, RawBlock> live;
};
RawRegistry& raw_registry() {
  // Never destroyed: cached segments are returned by allocators that outlive statics.
  alignas(RawRegistry) static unsigned char storage[sizeof(RawRegistry)];
  static RawRegistry* r = ::new (storage) RawRegistry();
  return *r;
}

// The device of the live allocation holding [p, p + n); -1 when none holds it whole.
int allocation_device(const void* p, size_t n) {
  auto& r = raw_registry();
  std::lock_guard<std::mutex> lk(r.mu);
  const char* c = static_cast<const char*>(p);
  auto it = r.live.upper_bound(c);
  if (it == r.live.begin()) return -1;
  --it;
  return c >= it->first && c + n <= it->first + it->second.nbytes ? it->second.device : -1;
}
bool in_device_memory(const void* p, size_t n) { return allocation_device(p, n) >= 0; }

void check_device_range(const void* p, size_t n, const char* what) {
  HMOE_CHECK(in_device_memory(p, n), "cuda (emulated): ", what, " [", p, ", +", n,
             " bytes) is not inside one device allocation (a host pointer passed as a device pointer, or an "
             "out-of-bounds range)");
}

// What the device calls itself (properties().name, hmoe selftest, profiler traces).
constexpr const char* kEmulatedName = "emulated CUDA device (SIMT emulator on the CPU)";

// A library built with HMOE_GPU=emu must not pass for a GPU: the device exists only for
// programs that ask for it (ctest sets the variable for every test). Read once:
// whether the device exists does not change while a program runs.
bool emulation_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("HMOE_EMULATE_CUDA");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return on;
}

// How many devices the emulator shows (HMOE_EMU_DEVICES, default 1; read once). They
// share the host's memory and threads: several exist to test code that uses several.
constexpr int kMaxEmulatedDevices = 8;
int emulated_devices() {
  static const int n = [] {
    const char* v = std::getenv("HMOE_EMU_DEVICES");
    if (v == nullptr || *v == '\0') return 1;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    HMOE_CHECK(*end == '\0' && n >= 1 && n <= kMaxEmulatedDevices, "HMOE_EMU_DEVICES=", v,
               ": the emulated device count must be a whole number from 1 to ", kMaxEmulatedDevices);
    return int(n);
  }();
  return n;
}

thread_local int t_device = 0;  // the calling thread's current device

// Stream tokens carry their device in the low bits (the launch check reads it back).
constexpr int kDeviceBits = 4;
static_assert(kMaxEmulatedDevices <= (1 << kDeviceBits));

}  // namespace

bool is_emulated() { return true; }
int device_count() { return emulation_enabled() ? emulated_devices() : 0; }

void check_device(int device) {
  HMOE_CHECK(emulation_enabled(), "cuda:", device, ": this hmoe was built with HMOE_GPU=emu, whose cuda device is the ",
             kEmulatedName,
             ", a test instrument and not a GPU; set HMOE_EMULATE_CUDA=1 to use it anyway (ctest sets it "
             "for every test), or build hmoe with -DHMOE_GPU=cuda for a GPU");
  const int n = emulated_devices();
  HMOE_CHECK(device >= 0 && device < n, "cuda:", device, " does not exist: the emulated build has ", n, " device",
             n == 1 ? " (cuda:0)" : "s (HMOE_EMU_DEVICES)");
}

int current_device() { return t_device; }

DeviceGuard::DeviceGuard(int device) : previous_(t_device), device_(device) {
  if (device != previous_) {
    check_device(device);
    t_device = device;
  }
}
// Restores only where the guard changed it, as the real build's guard does.
DeviceGuard::~DeviceGuard() {
  if (previous_ != device_) t_device = previous_;
}

const DeviceProperties& properties(int device) {
  check_device(device);
  static const DeviceProperties props = [] {
    DeviceProperties p;
    p.name = kEmulatedName;
    // The emulator checks launches against sm_90 limits, so it describes itself as one.
    p.major = 9;
    p.minor = 0;
    p.multiprocessors = int(std::max(1u, std::thread::hardware_concurrency()));
    p.max_threads_per_block = 1024;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    p.global_memory = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : 0;
    p.l2_cache = 50u << 20;  // an H100's, so code that sizes work by L2 behaves as there
    p.shared_per_block_optin = 227u << 10;
    p.warp_size = 32;
    p.memory_bandwidth_gbs = 0;  // not modelled
    return p;
  }();
  return props;
}

// --- memory -----------------------------------------------------------------------------
void* raw_malloc(size_t nbytes, int device) {
  check_device(device);
  const size_t rounded = (std::max<size_t>(nbytes, 1) + kGuard - 1) / kGuard * kGuard;
  if (rounded > (size_t(1) << 48)) return nullptr;
  const size_t total = kGuard + rounded + kGuard;
  char* base = static_cast<char*>(std::aligned_alloc(kGuard, total));
  if (!base) return nullptr;
  char* user = base + kGuard;
  std::memset(base, kCanary, kGuard);
  std::memset(user + nbytes, kCanary, total - kGuard - nbytes);
  auto& r = raw_registry();
  std::lock_guard<std::mutex> lk(r.mu);
  r.live.emplace(user, RawBlock{base, nbytes, total, device});
#if defined(HMOE_EMU_COUNTERS)
  emu::counters::add_global_range(user, nbytes);  // the access counters' global memory
#endif
  return user;
}

void raw_free(void* p, int device) {
  if (!p) return;
  check_device(device);
  RawBlock b{};
  {
    auto& r = raw_registry();
    std::lock_guard<std::mutex> lk(r.mu);
    auto it = r.live.find(static_cast<const char*>(p));
    HMOE_CHECK(it != r.live.end(), "cuda (emulated): raw_free(", p,
               ") of a pointer that raw_malloc did not return (or that was freed twice)");
    b = it->second;
    r.live.erase(it);
#if defined(HMOE_EMU_COUNTERS)
    emu::counters::remove_global_range(p);
#endif
  }
  // Check the canaries, then free the memory whatever they say (the error is the report).
  const char* user = b.base + kGuard;
  long bad = 0;  // offset from the user pointer of the first damaged byte
  bool damaged = false;
  for (size_t i = 0; i < kGuard && !damaged; ++i)
    if (static_cast<unsigned char>(b.base[i]) != kCanary) {
      damaged = true;
      bad = long(i) - long(kGuard);
    }
  for (size_t i = b.nbytes; i < b.total - kGuard && !damaged; ++i)
    if (static_cast<unsigned char>(user[i]) != kCanary) {
      damaged = true;
      bad = long(i);
    }
  const unsigned value = damaged ? static_cast<unsigned char>(user[bad]) : 0;
  std::free(b.base);
  HMOE_CHECK(!damaged, "cuda (emulated): guard bytes ", (bad < 0 ? "before" : "after"), " the device allocation of ",
             b.nbytes, " bytes at ", p, " were overwritten: byte at offset ", bad, " is 0x", std::hex, value,
             " instead of 0x", unsigned(kCanary), std::dec, " (a kernel or copy wrote out of bounds)");
}

int pointer_device(const void* p) { return p ? allocation_device(p, 1) : -1; }

void memcpy_async(void* dst, const void* src, size_t nbytes, CopyKind kind, const Stream& s) {
  (void)s;
  if (nbytes == 0) return;
  HMOE_CHECK(dst && src, "cuda (emulated): memcpy_async with a null pointer (", nbytes, " bytes)");
  if (kind == CopyKind::host_to_device || kind == CopyKind::device_to_device)
    check_device_range(dst, nbytes, "memcpy_async destination");
  if (kind == CopyKind::device_to_host || kind == CopyKind::device_to_device)
    check_device_range(src, nbytes, "memcpy_async source");
  std::memmove(dst, src, nbytes);
}

void memset_async(void* dst, int value, size_t nbytes, const Stream& s) {
  (void)s;
  if (nbytes == 0) return;
  check_device_range(dst, nbytes, "memset_async destination");
  std::memset(dst, value, nbytes);
}

void device_synchronize(int device) { check_device(device); }

// The emulator's launch already threw any error it found; nothing is pending.
void check_launch(const char*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, size_t) {}
void set_max_dynamic_smem(const void*, size_t) {}

void check_launch_stream(const char* kernel, const void* stream) {
  const int device = int(reinterpret_cast<uintptr_t>(stream) & ((uintptr_t(1) << kDeviceBits) - 1));
  HMOE_CHECK(device == t_device, "cuda (emulated): ", kernel, " launched on a stream of cuda:", device,
             " while the current device is cuda:", t_device, " (a GPU refuses the launch: make the stream's device ",
             "current first, cuda::DeviceGuard)");
}

// --- backend hooks: streams and events are in-order, synchronous tokens --------------------
namespace backend {
namespace {
void* token() {
  static std::atomic<uintptr_t> next{1};
  return reinterpret_cast<void*>(next.fetch_add(1, std::memory_order_relaxed));
}
}  // namespace

void* stream_create(int device) {
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(token()) << kDeviceBits) | uintptr_t(device));
}
void stream_destroy(void*, int) noexcept {}
void stream_synchronize(void*, int) {}
void* event_create(int, bool) { return token(); }
void event_destroy(void*, int) noexcept {}
void event_record(void*, void*, int) {}
void event_wait(void*, void*, int) {}
bool event_query(void*, int) { return true; }
void event_synchronize(void*, int) {}
float event_elapsed_ms(void*, void*, std::chrono::steady_clock::time_point start_host,
                       std::chrono::steady_clock::time_point end_host) {
  return std::chrono::duration<float, std::milli>(end_host - start_host).count();
}

void* pinned_alloc(size_t nbytes) {
  void* p = std::aligned_alloc(4096, (nbytes + 4095) / 4096 * 4096);
  HMOE_CHECK(p != nullptr, "cuda (emulated): out of host memory allocating a pinned buffer of ", nbytes, " bytes");
  return p;
}
void pinned_free(void* p) noexcept { std::free(p); }

}  // namespace backend
}  // namespace hmoe::cuda
