/// @file
/// CachingAllocator: the device memory pool behind the CUDA backend (and testable on
/// the CPU with any RawAllocator). Size-binned, best-fit with block splitting and
/// merging, stream-aware reuse (a block used on other streams waits for their events),
/// statistics, a memory limit, and on out-of-memory: free the cache, retry, then a
/// clear error carrying the statistics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

/// Memory pools: the caching allocator behind CPU and device tensors.
namespace hmoe::memory {

/// Identifies a stream to the allocator (the backend's stream handle as an integer).
using StreamId = uint64_t;

/// Where segments come from: cudaMalloc/cudaFree in the real build, host memory in
/// the emulator and in tests. raw_alloc returns nullptr when the device is full.
class RawAllocator {
 public:
  virtual ~RawAllocator() = default;
  /// nbytes of new device memory, or nullptr when the device is full.
  virtual void* raw_alloc(size_t nbytes) = 0;
  /// Returns memory raw_alloc gave.
  virtual void raw_free(void* p) = 0;
  /// Events for cross-stream reuse: record one on a stream, ask whether it completed.
  virtual uint64_t record_event(StreamId s) = 0;
  /// Whether the event has completed.
  virtual bool event_done(uint64_t event) = 0;
  /// Forgets the event.
  virtual void release_event(uint64_t event) = 0;
};

/// A pool's counters: bytes now and at the peak, and event counts.
struct AllocatorStats {
  /// @{
  /// Bytes handed out to tensors (allocated) and held from the device (reserved).
  size_t allocated = 0, reserved = 0;  ///< bytes handed out / held from the device
  /// @}
  /// @{
  /// The peaks of allocated and reserved since the pool was made or its peaks reset.
  size_t peak_allocated = 0, peak_reserved = 0;
  /// @}
  /// @{
  /// Counts: allocations, frees, allocations served from the cache, segments taken from
  /// the device, out-of-memory events and cache flushes.
  uint64_t allocations = 0, frees = 0, cache_hits = 0, segments = 0, ooms = 0, cache_flushes = 0;
  /// @}
  /// One line for messages.
  std::string str() const;
};

/// A device memory pool over a RawAllocator: see the file's description. Thread-safe.
class CachingAllocator {
 public:
  static constexpr size_t kRound = 512;             ///< every block is a multiple of this
  static constexpr size_t kSmallSize = 1 << 20;     ///< requests up to this share small segments
  static constexpr size_t kSmallSegment = 2 << 20;  ///< segment size of the small pool
  static constexpr size_t kLargeRound = 2 << 20;    ///< large segments round to this

  /// A pool over raw that holds at most memory_limit bytes.
  explicit CachingAllocator(RawAllocator& raw, size_t memory_limit = SIZE_MAX);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  /// Never returns null for nbytes > 0; throws hmoe::Error when memory cannot be had.
  void* allocate(size_t nbytes, StreamId stream);
  /// Returns p's block to the pool (reused once every stream that used it passed this point).
  void free(void* p);
  /// p is (also) used on stream s: its memory is reused only after s passes this point.
  void record_stream(void* p, StreamId s);
  /// Returns every wholly free segment to the device.
  void empty_cache();
  /// Caps the bytes the pool may hold from the device.
  void set_memory_limit(size_t bytes);
  /// The pool's counters.
  AllocatorStats stats() const;
  /// Restarts the peaks at the current allocated / reserved bytes (to measure one phase).
  void reset_peak_stats();
  size_t block_size(void* p) const;  ///< the rounded size of an allocated block

 private:
  struct Block;
  struct BySize {
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BySize>;

  Block* find_free(Pool& pool, size_t size, StreamId stream);
  Block* new_segment(size_t seg_size, size_t size, StreamId stream, bool small);
  void release_to_pool(Block* b);
  void process_pending();
  void release_free_segments(Pool& pool);
  Pool& pool_of(const Block* b);

  RawAllocator& raw_;
  size_t limit_;
  mutable std::mutex mu_;
  Pool small_, large_;
  std::unordered_map<void*, Block*> active_;
  std::unordered_map<Block*, std::unique_ptr<Block>> blocks_;      ///< owns every Block record
  std::vector<std::pair<Block*, std::vector<uint64_t>>> pending_;  ///< freed, waiting for events
  AllocatorStats stats_;
};

}  // namespace hmoe::memory
