// The cp.async emulation (async_copy.h): per-thread copies in flight, grouped by
// commit, landed at cp.async.wait_group.
#include "engine/emu/async_copy.h"

#include <algorithm>
#include <cstring>

#include "engine/emu/check.h"
#include "engine/emu/runtime.h"

namespace hmoe::emu::detail {

void* cp_async_issue(void* dst, const void* src, unsigned src_bytes) {
  constexpr unsigned bytes = 16;
  ThreadState& t = self();
  HMOE_EMU_CHECK(src_bytes <= bytes, "cp.async: the source size must be 0 to 16 bytes, got ", src_bytes);
  HMOE_EMU_CHECK(src_bytes == 0 || reinterpret_cast<uintptr_t>(src) % bytes == 0,
                 "cp.async: the global source must be 16-byte aligned");
  const auto* base = static_cast<const unsigned char*>(t.block->arena->data());
  const auto* d = static_cast<const unsigned char*>(dst);
  HMOE_EMU_CHECK(d >= base && d + bytes <= base + t.block->arena->capacity(),
                 "cp.async: the destination must be shared memory of the block");
  HMOE_EMU_CHECK(reinterpret_cast<uintptr_t>(dst) % bytes == 0,
                 "cp.async: the shared destination must be 16-byte aligned");
  t.async_copies.push_back(AsyncCopy{dst, t.async_commits, {}});
  return t.async_copies.back().data;
}

void cp_async_commit() { ++self().async_commits; }

void cp_async_wait(int newest) {
  ThreadState& t = self();
  HMOE_EMU_CHECK(newest >= 0, "cp.async.wait_group: the group count must not be negative, got ", newest);
  // Groups [0, commits - newest) land; the open group (== commits) never does here.
  const uint32_t limit = t.async_commits > uint32_t(newest) ? t.async_commits - uint32_t(newest) : 0;
  for (const AsyncCopy& c : t.async_copies)
    if (c.group < limit) std::memcpy(c.dst, c.data, sizeof c.data);
  std::erase_if(t.async_copies, [&](const AsyncCopy& c) { return c.group < limit; });
}

}  // namespace hmoe::emu::detail
