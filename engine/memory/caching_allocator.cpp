// The caching allocator's pools, splitting/merging, events and OOM handling.
#include "engine/memory/caching_allocator.h"

#include <algorithm>
#include <sstream>

#include "engine/error.h"

namespace hmoe::memory {

struct CachingAllocator::Block {
  char* ptr = nullptr;
  size_t size = 0;
  StreamId stream = 0;
  bool small = false;
  bool allocated = false;
  bool segment_start = false;  // first block of a raw segment (owns the raw pointer)
  Block* prev = nullptr;       // neighbours within the same segment
  Block* next = nullptr;
  std::vector<StreamId> used_on;  // other streams that touched the block
};

bool CachingAllocator::BySize::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) return a->stream < b->stream;
  if (a->size != b->size) return a->size < b->size;
  return a->ptr < b->ptr;
}

std::string AllocatorStats::str() const {
  std::ostringstream os;
  os << "allocated " << allocated << " B (peak " << peak_allocated << "), reserved " << reserved << " B (peak "
     << peak_reserved << "), " << segments << " segments, " << allocations << " allocations, " << cache_hits
     << " cache hits, " << ooms << " OOMs";
  return os.str();
}

CachingAllocator::CachingAllocator(RawAllocator& raw, size_t limit) : raw_(raw), limit_(limit) {}

CachingAllocator::~CachingAllocator() {
  // Blocks still handed out are leaked by their owners; return everything we hold.
  for (auto& [ptr, b] : blocks_)
    if (b->segment_start) raw_.raw_free(b->ptr);
  for (auto& [b, events] : pending_)
    for (uint64_t e : events) raw_.release_event(e);
}

CachingAllocator::Pool& CachingAllocator::pool_of(const Block* b) { return b->small ? small_ : large_; }

CachingAllocator::Block* CachingAllocator::find_free(Pool& pool, size_t size, StreamId stream) {
  Block key;
  key.stream = stream;
  key.size = size;
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  Block* b = *it;
  pool.erase(it);
  return b;
}

CachingAllocator::Block* CachingAllocator::new_segment(size_t seg_size, size_t size, StreamId stream, bool small) {
  (void)size;
  if (stats_.reserved + seg_size > limit_) return nullptr;
  void* p = raw_.raw_alloc(seg_size);
  if (!p) return nullptr;
  auto blk = std::make_unique<Block>();
  blk->ptr = static_cast<char*>(p);
  blk->size = seg_size;
  blk->stream = stream;
  blk->small = small;
  blk->segment_start = true;
  Block* b = blk.get();
  blocks_.emplace(b, std::move(blk));
  stats_.reserved += seg_size;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  ++stats_.segments;
  return b;
}

void* CachingAllocator::allocate(size_t nbytes, StreamId stream) {
  std::lock_guard<std::mutex> lk(mu_);
  if (nbytes == 0) nbytes = 1;
  HMOE_CHECK(nbytes <= (size_t(1) << 48), "device allocator: request of ", nbytes, " bytes is not plausible");
  process_pending();
  const size_t size = (nbytes + kRound - 1) / kRound * kRound;
  const bool small = size <= kSmallSize;
  Pool& pool = small ? small_ : large_;
  Block* b = find_free(pool, size, stream);
  if (b) {
    ++stats_.cache_hits;
  } else {
    const size_t seg = small ? kSmallSegment : (size + kLargeRound - 1) / kLargeRound * kLargeRound;
    b = new_segment(seg, size, stream, small);
    if (!b) {
      // Free what the cache holds and try once more before giving up.
      ++stats_.cache_flushes;
      release_free_segments(small_);
      release_free_segments(large_);
      b = new_segment(seg, size, stream, small);
    }
    if (!b) {
      ++stats_.ooms;
      HMOE_FAIL("device allocator: out of memory allocating ", nbytes, " bytes on stream ", stream,
                (limit_ != SIZE_MAX ? " (memory limit " + std::to_string(limit_) + " B)" : std::string()), "; ",
                stats_.str());
    }
  }
  // Split off the remainder when it is worth keeping.
  const size_t rest = b->size - size;
  if (rest >= (small ? kRound : kSmallSize + 1)) {
    auto r = std::make_unique<Block>();
    r->ptr = b->ptr + size;
    r->size = rest;
    r->stream = b->stream;
    r->small = b->small;
    r->prev = b;
    r->next = b->next;
    if (b->next) b->next->prev = r.get();
    b->next = r.get();
    b->size = size;
    pool.insert(r.get());
    blocks_.emplace(r.get(), std::move(r));
  }
  b->allocated = true;
  active_[b->ptr] = b;
  stats_.allocated += b->size;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  ++stats_.allocations;
  return b->ptr;
}

void CachingAllocator::record_stream(void* p, StreamId s) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = active_.find(p);
  HMOE_CHECK(it != active_.end(), "device allocator: record_stream on a pointer it did not allocate");
  Block* b = it->second;
  if (s != b->stream && std::find(b->used_on.begin(), b->used_on.end(), s) == b->used_on.end()) b->used_on.push_back(s);
}

void CachingAllocator::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lk(mu_);
  auto it = active_.find(p);
  HMOE_CHECK(it != active_.end(), "device allocator: free of a pointer it did not allocate (or freed twice)");
  Block* b = it->second;
  active_.erase(it);
  stats_.allocated -= b->size;
  ++stats_.frees;
  b->allocated = false;
  if (!b->used_on.empty()) {
    std::vector<uint64_t> events;
    for (StreamId s : b->used_on) events.push_back(raw_.record_event(s));
    b->used_on.clear();
    pending_.emplace_back(b, std::move(events));
    return;
  }
  release_to_pool(b);
}

void CachingAllocator::release_to_pool(Block* b) {
  Pool& pool = pool_of(b);
  // Merge with free neighbours of the same segment.
  auto absorb = [&](Block* keep, Block* gone) {
    pool.erase(gone);
    keep->size += gone->size;
    keep->next = gone->next;
    if (gone->next) gone->next->prev = keep;
    blocks_.erase(gone);
  };
  auto is_free = [&](Block* n) { return n && !n->allocated && pool.count(n); };
  if (is_free(b->next)) absorb(b, b->next);
  if (is_free(b->prev)) {
    Block* prev = b->prev;
    pool.erase(prev);  // before its size (the set's key) changes
    absorb(prev, b);
    b = prev;
  }
  pool.insert(b);
}

void CachingAllocator::process_pending() {
  for (size_t i = 0; i < pending_.size();) {
    auto& [b, events] = pending_[i];
    const bool done = std::all_of(events.begin(), events.end(), [&](uint64_t e) { return raw_.event_done(e); });
    if (!done) {
      ++i;
      continue;
    }
    for (uint64_t e : events) raw_.release_event(e);
    Block* blk = b;
    pending_.erase(pending_.begin() + std::ptrdiff_t(i));
    release_to_pool(blk);
  }
}

void CachingAllocator::release_free_segments(Pool& pool) {
  for (auto it = pool.begin(); it != pool.end();) {
    Block* b = *it;
    if (b->segment_start && !b->next) {  // a whole, free segment
      it = pool.erase(it);
      raw_.raw_free(b->ptr);
      stats_.reserved -= b->size;
      --stats_.segments;
      blocks_.erase(b);
    } else {
      ++it;
    }
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lk(mu_);
  process_pending();
  release_free_segments(small_);
  release_free_segments(large_);
}

void CachingAllocator::set_memory_limit(size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  limit_ = bytes;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.peak_allocated = stats_.allocated;
  stats_.peak_reserved = stats_.reserved;
}

size_t CachingAllocator::block_size(void* p) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = active_.find(p);
  HMOE_CHECK(it != active_.end(), "device allocator: unknown pointer");
  return it->second->size;
}

}  // namespace hmoe::memory
