// The device runtime on real GPUs (HMOE_GPU=cuda): the CUDA runtime API behind
// runtime.h. Every call runs with its device made current (and restored), every error
// becomes an hmoe::Error naming the call, and device_count() is 0 without a driver.
#include <cuda_runtime.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "engine/cuda/runtime.h"
#include "engine/cuda/runtime_backend.h"
#include "engine/error.h"

namespace hmoe::cuda {
namespace {

using backend::kMaxDevices;

[[noreturn]] void fail(cudaError_t e, const char* call) {
  cudaGetLastError();  // clears a non-sticky error so later calls do not report it again
  HMOE_FAIL("cuda: ", call, " failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

#define HMOE_CUDA_CHECK(call)                     \
  do {                                            \
    const cudaError_t hmoe_e_ = (call);           \
    if (hmoe_e_ != cudaSuccess) fail(hmoe_e_, #call); \
  } while (0)

int count_devices() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return c < 0 ? 0 : (c > kMaxDevices ? kMaxDevices : c);
  }();
  return n;
}

bool sync_every_launch() {
  static const bool on = [] {
    const char* e = std::getenv("HMOE_CUDA_SYNC_LAUNCHES");
    return e && *e && e[0] != '0';
  }();
  return on;
}

}  // namespace

// The runtime API works on the current device.
int current_device() {
  int d = 0;
  HMOE_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

DeviceGuard::DeviceGuard(int device) {
  HMOE_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) HMOE_CUDA_CHECK(cudaSetDevice(device));
  device_ = device;
}
DeviceGuard::~DeviceGuard() {
  if (previous_ != device_) cudaSetDevice(previous_);
}

bool is_emulated() { return false; }
int device_count() { return count_devices(); }

void check_device(int device) {
  const int n = device_count();
  HMOE_CHECK(device >= 0 && device < n, "cuda:", device, " does not exist (", n, " CUDA device",
             n == 1 ? "" : "s", " visible)");
}

const DeviceProperties& properties(int device) {
  check_device(device);
  struct Slot {
    std::once_flag once;
    DeviceProperties props;
  };
  static std::array<Slot, kMaxDevices> slots;
  Slot& slot = slots[size_t(device)];
  std::call_once(slot.once, [&] {
    cudaDeviceProp p{};
    HMOE_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    DeviceProperties& d = slot.props;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    d.max_threads_per_block = p.maxThreadsPerBlock;
    d.global_memory = p.totalGlobalMem;
    d.l2_cache = size_t(p.l2CacheSize);
    d.shared_per_block_optin = p.sharedMemPerBlockOptin;
    d.warp_size = p.warpSize;
    int clock_khz = 0, bus_bits = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess)
      d.memory_bandwidth_gbs = 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;  // double data rate
    else
      cudaGetLastError();
  });
  return slot.props;
}

// --- memory -----------------------------------------------------------------------------
void* raw_malloc(size_t nbytes, int device) {
  check_device(device);
  DeviceGuard g(device);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, nbytes == 0 ? 1 : nbytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  if (e != cudaSuccess) fail(e, "cudaMalloc");
  return p;
}

void raw_free(void* p, int device) {
  if (!p) return;
  DeviceGuard g(device);
  const cudaError_t e = cudaFree(p);
  if (e == cudaErrorCudartUnloading) return;  // at process exit the context is gone already
  if (e != cudaSuccess) fail(e, "cudaFree");
}

int pointer_device(const void* p) {
  if (!p) return -1;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ? a.device : -1;
}

void memcpy_async(void* dst, const void* src, size_t nbytes, CopyKind kind, const Stream& s) {
  (void)kind;  // unified addressing: the runtime infers the direction (and handles peer copies)
  if (nbytes == 0) return;
  DeviceGuard g(s.device());
  HMOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, static_cast<cudaStream_t>(s.native())));
}

void memset_async(void* dst, int value, size_t nbytes, const Stream& s) {
  if (nbytes == 0) return;
  DeviceGuard g(s.device());
  HMOE_CUDA_CHECK(cudaMemsetAsync(dst, value, nbytes, static_cast<cudaStream_t>(s.native())));
}

void device_synchronize(int device) {
  check_device(device);
  DeviceGuard g(device);
  HMOE_CUDA_CHECK(cudaDeviceSynchronize());
}

// --- kernel launches --------------------------------------------------------------------
void check_launch(const char* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  size_t smem) {
  cudaError_t e = cudaGetLastError();
  // HMOE_CUDA_SYNC_LAUNCHES=1: wait for each kernel, so a fault is reported at its launch.
  if (e == cudaSuccess && sync_every_launch()) e = cudaDeviceSynchronize();
  if (e == cudaSuccess) return;
  cudaGetLastError();
  HMOE_FAIL("cuda: kernel ", kernel, "<<<(", gx, ", ", gy, ", ", gz, "), (", bx, ", ", by, ", ", bz, "), ", smem,
            " B shared>>> failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

void set_max_dynamic_smem(const void* kernel, size_t bytes) {
  HMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// A GPU refuses a launch on another device's stream by itself (launch.h calls this only
// under emulation).
void check_launch_stream(const char*, const void*) {}

// --- backend hooks ------------------------------------------------------------------------
namespace backend {

void* stream_create(int device) {
  DeviceGuard g(device);
  cudaStream_t s = nullptr;
  // Non-blocking: never implicitly ordered with the legacy null stream.
  HMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void stream_destroy(void* stream, int device) noexcept {
  if (!stream) return;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return;  // the runtime is gone (process exit)
  cudaSetDevice(device);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  cudaSetDevice(previous);
  cudaGetLastError();
}

void stream_synchronize(void* stream, int device) {
  if (!stream) return;
  DeviceGuard g(device);
  HMOE_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void* event_create(int device, bool timing) {
  DeviceGuard g(device);
  cudaEvent_t e = nullptr;
  HMOE_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

void event_destroy(void* event, int device) noexcept {
  (void)device;  // an event may be destroyed from any device context
  cudaEventDestroy(static_cast<cudaEvent_t>(event));
  cudaGetLastError();
}

void event_record(void* event, void* stream, int device) {
  DeviceGuard g(device);
  HMOE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}

void event_wait(void* event, void* stream, int device) {
  DeviceGuard g(device);
  HMOE_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
}

bool event_query(void* event, int device) {
  (void)device;
  const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) return false;
  fail(e, "cudaEventQuery");
}

void event_synchronize(void* event, int device) {
  (void)device;
  HMOE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
}

float event_elapsed_ms(void* start, void* end, std::chrono::steady_clock::time_point,
                       std::chrono::steady_clock::time_point) {
  float ms = 0;
  HMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

void* pinned_alloc(size_t nbytes) {
  void* p = nullptr;
  HMOE_CUDA_CHECK(cudaMallocHost(&p, nbytes));
  return p;
}

void pinned_free(void* p) noexcept {
  cudaFreeHost(p);
  cudaGetLastError();
}

}  // namespace backend
}  // namespace hmoe::cuda
