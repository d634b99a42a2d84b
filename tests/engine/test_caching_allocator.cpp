// The caching allocator over a fake device: reuse, splitting and merging, stream
// separation and cross-stream events, statistics, the memory limit and OOM retry.
#include <cstdlib>
#include <set>

#include "engine/memory/caching_allocator.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::memory;

namespace {
class FakeDevice final : public RawAllocator {
 public:
  explicit FakeDevice(size_t capacity) : capacity_(capacity) {}
  ~FakeDevice() override { EXPECT_EQ(used_, 0u) << "segments leaked"; }
  void* raw_alloc(size_t n) override {
    if (used_ + n > capacity_) return nullptr;
    used_ += n;
    ++raw_allocs;
    void* p = std::malloc(n);
    sizes_[p] = n;
    return p;
  }
  void raw_free(void* p) override {
    used_ -= sizes_.at(p);
    sizes_.erase(p);
    ++raw_frees;
    std::free(p);
  }
  uint64_t record_event(StreamId) override {
    pending_.insert(++next_event_);
    return next_event_;
  }
  bool event_done(uint64_t e) override { return !pending_.count(e); }
  void release_event(uint64_t) override {}
  void complete_all_events() { pending_.clear(); }
  size_t used() const { return used_; }
  int raw_allocs = 0, raw_frees = 0;

 private:
  size_t capacity_, used_ = 0;
  std::map<void*, size_t> sizes_;
  std::set<uint64_t> pending_;
  uint64_t next_event_ = 0;
};
}  // namespace

TEST(CachingAllocator, ReusesSplitsAndMerges) {
  FakeDevice dev(64 << 20);
  {
    CachingAllocator a(dev);
    void* p = a.allocate(1000, 0);
    EXPECT_EQ(a.block_size(p), 1024u);
    void* q = a.allocate(3000, 0);  // carved from the same 2 MiB small segment
    EXPECT_EQ(dev.raw_allocs, 1);
    EXPECT_EQ(static_cast<char*>(q) - static_cast<char*>(p), 1024);
    a.free(p);
    void* r = a.allocate(800, 0);  // best fit: the freed 1024 block
    EXPECT_EQ(r, p);
    a.free(r);
    a.free(q);
    // Everything merged back into one free segment, which empty_cache returns.
    a.empty_cache();
    EXPECT_EQ(dev.raw_frees, 1);
    EXPECT_EQ(a.stats().reserved, 0u);
    void* big = a.allocate(5 << 20, 0);  // large pool: its own segment, rounded to 2 MiB
    EXPECT_EQ(a.stats().reserved, 6u << 20);
    a.free(big);
    void* again = a.allocate(5 << 20, 0);
    EXPECT_EQ(again, big);
    EXPECT_GE(a.stats().cache_hits, 2u);
    a.free(again);
    const AllocatorStats s = a.stats();
    EXPECT_EQ(s.allocated, 0u);
    EXPECT_GE(s.peak_allocated, 5u << 20);
    // Peaks restart from the current use, then grow with new allocations only.
    void* held = a.allocate(1 << 20, 0);
    a.reset_peak_stats();
    EXPECT_EQ(a.stats().peak_allocated, a.stats().allocated);
    EXPECT_EQ(a.stats().peak_reserved, a.stats().reserved);
    void* more = a.allocate(2 << 20, 0);
    EXPECT_EQ(a.stats().peak_allocated, a.stats().allocated);
    a.free(more);
    EXPECT_GT(a.stats().peak_allocated, a.stats().allocated);
    a.free(held);
  }
  EXPECT_EQ(dev.used(), 0u);
}

TEST(CachingAllocator, StreamsDoNotShareBlocksUntilEventsComplete) {
  FakeDevice dev(64 << 20);
  CachingAllocator a(dev);
  void* p = a.allocate(4096, 1);
  a.free(p);
  void* q = a.allocate(4096, 2);  // another stream: not the block stream 1 freed
  EXPECT_NE(p, q);
  void* r = a.allocate(4096, 1);
  EXPECT_EQ(r, p);
  a.record_stream(r, 2);  // r was used on stream 2 too
  a.free(r);
  void* s = a.allocate(4096, 1);
  EXPECT_NE(s, r);  // its event on stream 2 has not completed
  dev.complete_all_events();
  void* t = a.allocate(4096, 1);
  EXPECT_EQ(t, r);
  for (void* x : {q, s, t}) a.free(x);
}

TEST(CachingAllocator, LimitFlushAndClearOomError) {
  FakeDevice dev(16 << 20);
  CachingAllocator a(dev);
  void* p = a.allocate(6 << 20, 0);
  a.free(p);  // cached: 6 MiB reserved
  void* q = a.allocate(12 << 20, 0);  // needs the cache flushed to fit in 16 MiB
  EXPECT_EQ(a.stats().cache_flushes, 1u);
  EXPECT_HMOE_ERROR(a.allocate(8 << 20, 0), "out of memory allocating");
  EXPECT_EQ(a.stats().ooms, 1u);
  a.free(q);
  a.empty_cache();
  a.set_memory_limit(4 << 20);
  EXPECT_HMOE_ERROR(a.allocate(5 << 20, 0), "memory limit");
  EXPECT_HMOE_ERROR(a.free(reinterpret_cast<void*>(0x1234)), "did not allocate");
  void* r = a.allocate(1 << 20, 0);
  a.free(r);
  EXPECT_HMOE_ERROR(a.free(r), "freed twice");
}

TEST(CachingAllocator, ManyRandomAllocationsStayConsistent) {
  FakeDevice dev(256 << 20);
  CachingAllocator a(dev);
  std::vector<std::pair<void*, size_t>> live;
  uint64_t x = 12345;
  for (int i = 0; i < 5000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    if (live.empty() || ((x >> 60) < 8 && live.size() < 60)) {
      const size_t n = 1 + (x >> 33) % (3 << 20);
      void* p = a.allocate(n, (x >> 20) & 1);
      std::memset(p, 0xAB, n);  // a real write over the whole block
      live.emplace_back(p, n);
    } else {
      const size_t j = (x >> 24) % live.size();
      a.free(live[j].first);
      live.erase(live.begin() + std::ptrdiff_t(j));
    }
    // No two live blocks overlap.
    if (i % 500 == 0) {
      auto sorted = live;
      std::sort(sorted.begin(), sorted.end());
      for (size_t k = 1; k < sorted.size(); ++k)
        ASSERT_LE(static_cast<char*>(sorted[k - 1].first) + sorted[k - 1].second, static_cast<char*>(sorted[k].first));
    }
  }
  for (auto& [p, n] : live) a.free(p);
  a.empty_cache();
  EXPECT_EQ(a.stats().reserved, 0u);
}
