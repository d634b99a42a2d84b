// WMMA support in the runtime: the launch's seed-dependent scrambled fragment
// mappings and the per-lane argument checks.
#include <numeric>
#include <sstream>

#include "engine/emu/runtime.h"
#include "engine/emu/check.h"

namespace hmoe::emu::detail {

const uint16_t* wmma_map(int use, int rows, int cols) {
  ThreadState& t = self();
  LaunchState& l = *t.block->launch;
  // Index by use and by which of the three supported shapes (told apart by M for
  // a and accumulators, by N for b).
  const int key_dim = use == 1 ? cols : rows;
  const int shape = key_dim == 16 ? 0 : ((use == 1 ? key_dim == 8 : key_dim == 32) ? 1 : 2);
  const int idx = use * 3 + shape;
  std::call_once(l.wmma.once[idx], [&] {
    const unsigned n = unsigned(rows * cols);
    std::vector<uint16_t>& m = l.wmma.map[idx];
    m.resize(n);
    std::iota(m.begin(), m.end(), uint16_t(0));
    // Fisher-Yates from the schedule seed: a different, unguessable layout per seed
    // (never the identity or a row/column pattern a kernel could rely on).
    uint64_t st = l.schedule.seed * 0x9e3779b97f4a7c15ull + uint64_t(idx) * 0x632be59bd9b4e019ull + 0x5157;
    for (unsigned i = n - 1; i > 0; --i) std::swap(m[i], m[splitmix64(st) % (i + 1)]);
  });
  return l.wmma.map[idx].data();
}

void wmma_check(const char* what, const void* ptr, unsigned ldm, unsigned elem_size, unsigned min_ldm,
                const std::source_location& loc) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  const unsigned ldm_multiple = 16 / elem_size;
  if (p % 32 == 0 && ldm % ldm_multiple == 0 && ldm >= min_ldm) return;
  ThreadState& t = self();
  std::ostringstream os;
  os << what << " at " << loc.file_name() << ':' << loc.line() << " (thread " << thread_pos(*t.block, t.linear)
     << "): ";
  if (p % 32 != 0)
    os << "pointer " << ptr << " is not 32-byte (256-bit) aligned";
  else if (ldm % ldm_multiple != 0)
    os << "ldm " << ldm << " is not a multiple of " << ldm_multiple << " elements (16 bytes)";
  else
    os << "ldm " << ldm << " is smaller than the tile's " << min_ldm << " elements per row/column";
  fail(*t.block, os.str());
}

}  // namespace hmoe::emu::detail
