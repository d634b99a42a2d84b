// The parts of the device runtime shared by the real and the emulated build: Stream
// and Event objects over the backend's native handles, the per-thread current stream,
// the default streams, the stream-id registry, PinnedBuffer and DeviceProperties::str.
#include <array>
#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "engine/cuda/runtime.h"
#include "engine/cuda/runtime_backend.h"
#include "engine/error.h"

namespace hmoe::cuda {
namespace {

using backend::kMaxDevices;

// Live streams by id, so that the caching allocator (which records streams by id) can
// record events on them. Process-wide by nature: streams move between threads.
struct StreamRegistry {
  std::mutex mu;
  std::unordered_map<uint64_t, Stream*> live;
};
StreamRegistry& stream_registry() {
  // Never destroyed: streams owned by other static objects may unregister at exit.
  alignas(StreamRegistry) static unsigned char storage[sizeof(StreamRegistry)];
  static StreamRegistry* r = ::new (storage) StreamRegistry();
  return *r;
}

uint64_t next_stream_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void register_stream(uint64_t id, Stream* s) {
  auto& r = stream_registry();
  std::lock_guard<std::mutex> lk(r.mu);
  r.live[id] = s;
}
void unregister_stream(uint64_t id) {
  auto& r = stream_registry();
  std::lock_guard<std::mutex> lk(r.mu);
  r.live.erase(id);
}

// The default stream of each device: created on first use and deliberately never
// destroyed, since work may be queued on it from static destructors and the CUDA
// runtime may already be torn down at process exit.
Stream& default_stream(int device) {
  struct Slot {
    std::once_flag once;
    alignas(Stream) unsigned char storage[sizeof(Stream)];
    Stream* stream = nullptr;
  };
  static std::array<Slot, kMaxDevices> slots;
  Slot& slot = slots[size_t(device)];
  std::call_once(slot.once, [&] { slot.stream = ::new (slot.storage) Stream(device); });
  return *slot.stream;
}

thread_local std::array<Stream*, kMaxDevices> t_current{};

}  // namespace

// --- Stream -----------------------------------------------------------------------------
Stream::Stream(int device) : device_(device) {
  check_device(device);
  HMOE_CHECK(device < kMaxDevices, "cuda: device ", device, " is beyond the ", kMaxDevices, " this build supports");
  handle_ = backend::stream_create(device);
  id_ = next_stream_id();
  register_stream(id_, this);
}

Stream::~Stream() {
  if (id_ == 0) return;  // moved from
  unregister_stream(id_);
  try {
    // The caching allocator treats a vanished stream as finished (record_on_stream_id).
    backend::stream_synchronize(handle_, device_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hmoe: cuda: synchronizing a stream being destroyed failed: %s\n", e.what());
  }
  backend::stream_destroy(handle_, device_);
}

Stream::Stream(Stream&& o) noexcept : handle_(o.handle_), device_(o.device_), id_(o.id_) {
  o.handle_ = nullptr;
  o.id_ = 0;
  if (id_) register_stream(id_, this);
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    Stream old(std::move(*this));  // releases the current handle at scope end
    handle_ = o.handle_;
    device_ = o.device_;
    id_ = o.id_;
    o.handle_ = nullptr;
    o.id_ = 0;
    if (id_) register_stream(id_, this);
  }
  return *this;
}

void Stream::synchronize() const { backend::stream_synchronize(handle_, device_); }

Stream& current_stream(int device) {
  check_device(device);
  HMOE_CHECK(device < kMaxDevices, "cuda: device ", device, " is beyond the ", kMaxDevices, " this build supports");
  Stream* s = t_current[size_t(device)];
  return s ? *s : default_stream(device);
}

StreamGuard::StreamGuard(Stream& s) : previous_(t_current[size_t(s.device())]), device_(s.device()) {
  t_current[size_t(device_)] = &s;
}
StreamGuard::~StreamGuard() { t_current[size_t(device_)] = previous_; }

bool record_on_stream_id(Event& e, uint64_t stream_id) {
  auto& r = stream_registry();
  std::lock_guard<std::mutex> lk(r.mu);  // held while recording: the stream cannot vanish meanwhile
  auto it = r.live.find(stream_id);
  if (it == r.live.end()) return false;
  e.record(*it->second);
  return true;
}

// --- Event ------------------------------------------------------------------------------
Event::Event(int device, bool timing) : device_(device) {
  check_device(device);
  handle_ = backend::event_create(device, timing);
}

Event::~Event() {
  if (handle_) backend::event_destroy(handle_, device_);
}

Event::Event(Event&& o) noexcept : handle_(o.handle_), device_(o.device_), host_time_(o.host_time_) {
  o.handle_ = nullptr;
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (handle_) backend::event_destroy(handle_, device_);
    handle_ = o.handle_;
    device_ = o.device_;
    host_time_ = o.host_time_;
    o.handle_ = nullptr;
  }
  return *this;
}

void Event::record(const Stream& s) {
  HMOE_CHECK(s.device() == device_, "cuda: recording an event of device ", device_, " on a stream of device ",
             s.device());
  backend::event_record(handle_, s.native(), device_);
  host_time_ = std::chrono::steady_clock::now();
}

void Event::wait_on(const Stream& s) const { backend::event_wait(handle_, s.native(), s.device()); }
bool Event::query() const { return backend::event_query(handle_, device_); }
void Event::synchronize() const { backend::event_synchronize(handle_, device_); }
float Event::elapsed_ms(const Event& end) const {
  return backend::event_elapsed_ms(handle_, end.handle_, host_time_, end.host_time_);
}

// --- PinnedBuffer -----------------------------------------------------------------------
PinnedBuffer::PinnedBuffer(size_t nbytes) : size_(nbytes) {
  if (nbytes) data_ = backend::pinned_alloc(nbytes);
}
PinnedBuffer::~PinnedBuffer() {
  if (data_) backend::pinned_free(data_);
}
PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) backend::pinned_free(data_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

// --- properties -------------------------------------------------------------------------
std::string DeviceProperties::str() const {
  std::ostringstream os;
  os << name << " (sm_" << major << minor << ", " << multiprocessors << " SMs, " << (global_memory >> 20)
     << " MiB, L2 " << (l2_cache >> 10) << " KiB, smem/block opt-in " << (shared_per_block_optin >> 10) << " KiB";
  if (memory_bandwidth_gbs > 0) os << ", " << memory_bandwidth_gbs << " GB/s";
  os << ")";
  return os.str();
}

bool device_available() { return device_count() > 0; }

}  // namespace hmoe::cuda
