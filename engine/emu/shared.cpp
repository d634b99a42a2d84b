// The per-block shared-memory arena: allocation by declaration site, 0xFF poison,
// canary red zones between arrays and their check at barriers and block end.
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/emu/runtime.h"
#include "engine/emu/check.h"

namespace hmoe::emu::detail {
namespace {

// Room for the largest dynamic region, the static limit, and red zones plus
// alignment padding for up to 128 static arrays.
constexpr size_t kArenaBytes = kMaxDynamicSmem + kMaxStaticSmem + 130 * (SharedArena::kRedZone + 256);

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Fills arena bytes. In TSan builds the fill must not go through the memset
// interceptor: it runs on the fiber of the first thread to reach a declaration and
// would count as that thread's write, racing with every other thread's first store.
// Volatile stores from this uninstrumented file are invisible to TSan.
void fill(unsigned char* p, unsigned char v, size_t n) {
#if defined(HMOE_EMU_TSAN)
  volatile unsigned char* q = p;
  for (size_t i = 0; i < n; ++i) q[i] = v;
#else
  std::memset(p, v, n);
#endif
}

}  // namespace

void SharedArena::Free::operator()(unsigned char* p) const { std::free(p); }

SharedArena::SharedArena() : capacity_(align_up(kArenaBytes, 4096)) {
  // 1 KiB alignment like the base of a GPU's shared memory window.
  mem_.reset(static_cast<unsigned char*>(std::aligned_alloc(1024, capacity_)));
  HMOE_EMU_CHECK(mem_ != nullptr, "hmoe::emu: cannot allocate the shared-memory arena");
}

void SharedArena::begin_block(size_t dynamic_bytes) {
  regions_.clear();
  static_bytes_ = 0;
  dyn_offset_ = kRedZone;
  dyn_size_ = dynamic_bytes;
  fill(base(), kCanary, kRedZone);
  fill(base() + dyn_offset_, kPoison, dyn_size_);
  const size_t end = dyn_offset_ + dyn_size_;
  top_ = align_up(end + kRedZone, 128);
  fill(base() + end, kCanary, top_ - end);
  regions_.push_back(Region{nullptr, dyn_offset_, dyn_size_});
}

void* SharedArena::get(const SharedSite& site) {
  for (const Region& r : regions_)
    if (r.site == &site) return base() + r.offset;
  static_bytes_ += site.size;
  HMOE_EMU_CHECK(static_bytes_ <= kMaxStaticSmem, "static shared memory exceeds ", kMaxStaticSmem,
             " bytes (CUDA's limit) with array '", site.name, "' (", site.size, " bytes) declared at ", site.file, ":",
             site.line);
  HMOE_EMU_CHECK(static_bytes_ + dyn_size_ <= kMaxDynamicSmem, "static (", static_bytes_, " bytes) plus dynamic (",
             dyn_size_, " bytes) shared memory exceed ", kMaxDynamicSmem, " bytes, at array '", site.name, "' (",
             site.file, ":", site.line, ")");
  // At least 16-byte alignment, as nvcc gives shared arrays in practice (float4 loads).
  const size_t offset = align_up(top_, site.align < 16 ? 16 : site.align);
  const size_t end = offset + site.size;
  HMOE_EMU_CHECK(end + kRedZone <= capacity_, "too many shared arrays in one block (arena of ", capacity_,
             " bytes is full at '", site.name, "')");
  fill(base() + top_, kCanary, offset - top_);
  fill(base() + offset, kPoison, site.size);
  top_ = align_up(end + kRedZone, 16);
  fill(base() + end, kCanary, top_ - end);
  regions_.push_back(Region{&site, offset, site.size});
  return base() + offset;
}

std::string SharedArena::describe(const Region& r) const {
  std::ostringstream os;
  if (r.site == nullptr) {
    os << "dynamic shared memory (" << r.size << " bytes)";
  } else {
    os << "shared array '" << r.site->name << "' (" << r.size << " bytes, declared at " << r.site->file << ':'
       << r.site->line << ')';
  }
  return os.str();
}

std::string SharedArena::check() const {
  // Zone i lies after region i (up to region i+1 or the top); zone -1 before region 0.
  auto bad_in = [this](size_t from, size_t to, size_t& first, size_t& count) {
    count = 0;
    for (size_t p = from; p < to; ++p) {
      if (base()[p] != kCanary) {
        if (count++ == 0) first = p;
      }
    }
    return count > 0;
  };
  size_t first = 0, count = 0;
  if (bad_in(0, regions_[0].offset, first, count)) {
    return "out-of-bounds shared memory write: " + std::to_string(count) + " byte(s) of the red zone before " +
           describe(regions_[0]) + " were overwritten (first at " + std::to_string(regions_[0].offset - first) +
           " bytes before its start)";
  }
  for (size_t i = 0; i < regions_.size(); ++i) {
    const size_t from = regions_[i].offset + regions_[i].size;
    const size_t to = i + 1 < regions_.size() ? regions_[i + 1].offset : top_;
    if (!bad_in(from, to, first, count)) continue;
    std::string msg = "out-of-bounds shared memory write: " + std::to_string(count) +
                      " byte(s) of the red zone after " + describe(regions_[i]) + " were overwritten (first at byte " +
                      std::to_string(first - from) + " past its end";
    if (i + 1 < regions_.size())
      msg += ", " + std::to_string(to - first) + " bytes before " + describe(regions_[i + 1]);
    return msg + ")";
  }
  return {};
}

void* shared_static(const SharedSite& site) {
  ThreadState& t = self();
  try {
    return t.block->arena->get(site);
  } catch (const Error& e) {
    fail(*t.block, e.what());
  }
}

void* shared_dynamic() { return self().block->arena->dynamic(); }

}  // namespace hmoe::emu::detail

namespace hmoe::emu {
size_t dynamic_shared_size() { return detail::self().block->arena->dynamic_size(); }
}  // namespace hmoe::emu
