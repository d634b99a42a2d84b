/// @file
/// The device runtime: the one thin layer that all CUDA-backend host code calls
/// (memory, copies, streams, events, properties, launch checks). Implemented twice
/// behind this header: runtime_cuda.cpp (the CUDA runtime API; HMOE_GPU=cuda) and
/// runtime_emu.cpp (HMOE_GPU=emu: device memory is guarded host memory, streams run in
/// order, kernels run on the SIMT emulator). Code above this layer is identical in
/// both builds. This header includes no CUDA header, so any host file may use it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

/// The CUDA device runtime: device count and properties, streams, synchronisation.
namespace hmoe::cuda {

/// True when this build has the CUDA backend and it is the emulator.
bool is_emulated();
/// Devices the driver sees (0 when there is no driver or no device; never throws).
/// The emulator has one for programs that opt in (HMOE_EMULATE_CUDA=1), else none;
/// HMOE_EMU_DEVICES=n (1 to 8) gives it n, to test code that uses several devices.
int device_count();
/// device_count() > 0: the cuda device can be used. Real-build tests skip without it.
bool device_available();
/// Throws hmoe::Error naming the device when it does not exist.
void check_device(int device);

/// The calling thread's current device (the one kernels are launched on).
int current_device();

/// Makes `device` the calling thread's current device for a scope, then restores the
/// previous one (both only where it differs). Code in this layer does it for every call;
/// the op dispatch does it for every kernel (ops/dispatch.h); code that calls a library
/// working on the current device (NCCL creates a communicator on it) needs it too.
class DeviceGuard {
 public:
  /// Makes device current on this thread until the guard dies.
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

/// A device's name, compute capability and sizes.
struct DeviceProperties {
  std::string name;  ///< the device's name ("NVIDIA H100 80GB HBM3", or the emulator's)
  /// @{
  /// Compute capability (major.minor).
  int major = 0, minor = 0;  ///< compute capability
  /// @}
  int multiprocessors = 0;            ///< streaming multiprocessors
  int max_threads_per_block = 0;      ///< most threads a block may have
  size_t global_memory = 0;           ///< bytes
  size_t l2_cache = 0;                ///< bytes
  size_t shared_per_block_optin = 0;  ///< largest dynamic shared memory a kernel may opt in to
  int warp_size = 32;                 ///< threads per warp
  double memory_bandwidth_gbs = 0;    ///< theoretical, from memory clock and bus width (0 if unknown)
  std::string str() const;            ///< one line for logs and the self-test header
};
/// The properties of device (queried once, then cached).
const DeviceProperties& properties(int device);

// --- streams and events -------------------------------------------------------------------
/// A device work queue (RAII). Each device has a default stream; the legacy null stream
/// is never used: work is ordered only where the code says so.
class Stream {
 public:
  explicit Stream(int device = 0);  ///< a new stream on that device
  ~Stream();
  /// Takes o's stream over.
  Stream(Stream&& o) noexcept;
  /// Takes o's stream over, releasing this one's.
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void* native() const { return handle_; }  ///< cudaStream_t in the real build
  /// The device the stream belongs to.
  int device() const { return device_; }
  uint64_t id() const { return id_; }  ///< unique per process, for the caching allocator
  /// Waits until the work queued so far has completed.
  void synchronize() const;

 private:
  void* handle_ = nullptr;
  int device_ = 0;
  uint64_t id_ = 0;
};

/// The stream kernels of this OS thread are launched on, per device (default: the
/// device's default stream). StreamGuard changes it for a scope.
Stream& current_stream(int device = 0);
/// Makes a stream the current stream of its device on this thread for a scope.
class StreamGuard {
 public:
  /// Makes s current until the guard dies.
  explicit StreamGuard(Stream& s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream* previous_;
  int device_;
};

/// A device event (RAII): a point in a stream's work, to wait on or to time.
class Event {
 public:
  /// A new event on device; `timing` events can measure elapsed_ms.
  explicit Event(int device = 0, bool timing = true);
  ~Event();
  /// Takes o's event over.
  Event(Event&& o) noexcept;
  /// Takes o's event over, releasing this one's.
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  /// Records the point the stream's queued work has reached.
  void record(const Stream& s);
  void wait_on(const Stream& s) const;  ///< s waits (on the device) until this event completes
  bool query() const;                   ///< completed?
  /// Waits on the host until the event completes.
  void synchronize() const;
  /// Milliseconds between two recorded, completed timing events (start.elapsed_ms(end)).
  float elapsed_ms(const Event& end) const;

 private:
  friend bool record_on_stream_id(Event& e, uint64_t stream_id);
  void* handle_ = nullptr;
  int device_ = 0;
  std::chrono::steady_clock::time_point host_time_{};  ///< the emulator's clock
};

/// Records e on the live stream with this id (the caching allocator knows streams by
/// id); false when no such stream exists any more: a Stream synchronizes before it is
/// destroyed, so its work is complete.
bool record_on_stream_id(Event& e, uint64_t stream_id);

// --- memory ---------------------------------------------------------------------------------
/// Raw device memory (what the caching allocator takes its segments from); nullptr when
/// the device is out of memory. Prefer tensors (Device::cuda) or the caching allocator.
void* raw_malloc(size_t nbytes, int device);
void raw_free(void* p, int device);  ///< the emulator checks the guard canaries here

/// Page-locked host memory for fast, truly asynchronous transfers (RAII).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  /// nbytes of page-locked host memory.
  explicit PinnedBuffer(size_t nbytes);
  ~PinnedBuffer();
  /// Takes o's buffer over.
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  /// Takes o's buffer over, releasing this one's.
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  /// The first byte (null when empty).
  void* data() const { return data_; }
  /// The size in bytes.
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

/// The direction of a copy.
enum class CopyKind : uint8_t { host_to_device, device_to_host, device_to_device, host_to_host };
/// Queues a copy of nbytes on stream s.
void memcpy_async(void* dst, const void* src, size_t nbytes, CopyKind kind, const Stream& s);
/// Queues a memset of nbytes at dst (device memory) on stream s.
void memset_async(void* dst, int value, size_t nbytes, const Stream& s);
/// Waits until all work queued on device has completed.
void device_synchronize(int device);
/// The device whose memory p points into (-1 for host memory or an unknown pointer).
int pointer_device(const void* p);

// --- kernel launches ------------------------------------------------------------------------
/// Called after every launch (launch_checked in engine/cuda/launch.h, the kernel sources'
/// one launch helper, does it): reads the launch error, if any, and throws hmoe::Error
/// naming the kernel and its configuration.
void check_launch(const char* kernel, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
                  unsigned block_y, unsigned block_z, size_t dynamic_smem);
/// Dynamic shared memory a launch may ask for without opting in.
inline constexpr size_t kSmemWithoutOptIn = 48 * 1024;
/// Lets a kernel use more than kSmemWithoutOptIn bytes of dynamic shared memory (no-op
/// when emulated).
void set_max_dynamic_smem(const void* kernel, size_t bytes);
/// The emulator's stand-in for the launch failure a GPU reports when a kernel goes to a
/// stream of another device than the current one: an hmoe::Error naming both. Called by
/// launch_checked in the emulated build only (a real launch fails by itself).
void check_launch_stream(const char* kernel, const void* stream);

}  // namespace hmoe::cuda
