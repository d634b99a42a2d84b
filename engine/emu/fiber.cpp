// Fiber switching on boost::context::fiber and the pooled guard-paged stacks.
// Built with -fno-sanitize=thread: TSan is told about every switch explicitly.
#include "engine/emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "engine/emu/check.h"

namespace hmoe::emu::detail {
namespace ctx = boost::context;

namespace {

size_t page_size() {
  static const size_t p = size_t(::sysconf(_SC_PAGESIZE));
  return p;
}

// Process-wide free lists of stacks by size. Stacks are never unmapped: the set of
// stacks alive at once is bounded by workers x 1024 threads, and re-mapping per block
// would cost three syscalls per CUDA thread.
class StackPool {
 public:
  static StackPool& instance() {
    static StackPool pool;
    return pool;
  }
  StackSlot take(size_t size) {
    {
      std::lock_guard lock(mu_);
      auto& list = free_[size];
      if (!list.empty()) {
        StackSlot s = list.back();
        list.pop_back();
        return s;
      }
    }
    const size_t guard = page_size();
    void* base = ::mmap(nullptr, size + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                        -1, 0);
    HMOE_EMU_CHECK(base != MAP_FAILED, "hmoe::emu: cannot map a fiber stack of ", size, " bytes");
    HMOE_EMU_CHECK(::mprotect(base, guard, PROT_NONE) == 0, "hmoe::emu: cannot protect a fiber stack guard page");
    return StackSlot{static_cast<char*>(base) + guard + size, size};
  }
  void give(std::vector<StackSlot>& stacks, size_t size) {
    std::lock_guard lock(mu_);
    auto& list = free_[size];
    list.insert(list.end(), stacks.begin(), stacks.end());
    stacks.clear();
  }

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<StackSlot>> free_;
};

// The Boost StackAllocator handed to each fiber: it borrows from the worker's cache
// and returns the stack there when the fiber's record is destroyed.
struct CachedStack {
  StackCache* cache;
  StackSlot slot;
  ctx::stack_context allocate() {
    ctx::stack_context sc;
    sc.sp = slot.top;
    sc.size = slot.size;
    return sc;
  }
  void deallocate(ctx::stack_context&) noexcept { cache->give(slot); }
};

}  // namespace

StackCache::StackCache(size_t stack_size) : stack_size_((stack_size + page_size() - 1) / page_size() * page_size()) {}

StackCache::~StackCache() {
  recycle();
  StackPool::instance().give(free_, stack_size_);
}

StackSlot StackCache::take() {
  if (!free_.empty()) {
    StackSlot s = free_.back();
    free_.pop_back();
    return s;
  }
  return StackPool::instance().take(stack_size_);
}

Fiber::~Fiber() {
  if (alive_) {
    // Every fiber is run to completion by the scheduler (errors unwind it by an
    // exception), so a live fiber here is a bug in the emulator itself.
    std::fputs("hmoe::emu: internal error: destroying a live fiber\n", stderr);
    std::abort();
  }
#if defined(HMOE_EMU_TSAN)
  if (tsan_self_) __tsan_destroy_fiber(tsan_self_);
#endif
}

void Fiber::start(StackCache& stacks, Entry entry, void* arg) {
  entry_ = entry;
  arg_ = arg;
  CachedStack alloc{&stacks, stacks.take()};
  ctx_ = ctx::fiber(std::allocator_arg, alloc, [this](ctx::fiber&& sink) {
    sink_ = std::move(sink);
    entry_(arg_);
#if defined(HMOE_EMU_TSAN)
    __tsan_switch_to_fiber(tsan_resumer_, __tsan_switch_to_fiber_no_sync);
#endif
    return std::move(sink_);
  });
  alive_ = true;
#if defined(HMOE_EMU_TSAN)
  // The TSan context outlives the CUDA thread: creating one costs ~70% of a TSan
  // test's time (TSan builds a whole thread state for it). Reusing it for the same
  // thread slot of the worker's next block orders nothing new: the worker's block
  // anchors already order every fiber of one block before every fiber of the next.
  if (!tsan_self_) tsan_self_ = __tsan_create_fiber(0);
#endif
}

void Fiber::finished() { alive_ = false; }

#if defined(HMOE_EMU_TSAN)
void tsan_release(const void* addr) { __tsan_release(const_cast<void*>(addr)); }
void tsan_acquire(const void* addr) { __tsan_acquire(const_cast<void*>(addr)); }
#else
void tsan_release(const void*) {}
void tsan_acquire(const void*) {}
#endif

}  // namespace hmoe::emu::detail
