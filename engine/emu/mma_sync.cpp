// The ldmatrix / mma.sync emulation (mma_sync.h): row-address checks, and the register
// exchanges that follow the PTX ISA's fragment layouts for m8n8 loads and m16n8k16 MMA.
#include "engine/emu/mma_sync.h"

#include <cstring>
#include <sstream>

#include "engine/emu/runtime.h"
#include "engine/half_bits.h"

namespace hmoe::emu::detail {
namespace {

constexpr int kRowBytes = 16;  // one m8n8 row: eight 16-bit elements

std::string ldmatrix_name(int num, bool trans) {
  return "ldmatrix.sync.aligned.m8n8.x" + std::to_string(num) + (trans ? ".trans" : "") + ".shared.b16";
}

// What one lane hands the ldmatrix exchange: the row it read and where its registers go.
struct LdmatrixLane {
  const unsigned char* row;
  unsigned* r;
};

// 16-bit element `col` of row `row` of matrix `m`: lane 8m + row supplied that row.
uint16_t element(const uint64_t* lanes, int m, int row, int col) {
  const auto& src = *reinterpret_cast<const LdmatrixLane*>(lanes[8 * m + row]);
  uint16_t e;
  std::memcpy(&e, src.row + 2 * col, 2);
  return e;
}

// Runs on the last lane's fiber. shared[0]: num | trans << 8.
void ldmatrix_complete(const uint64_t* lanes, const uint64_t* shared, unsigned /*arrived*/) {
  const int num = int(shared[0] & 0xff);
  const bool trans = (shared[0] >> 8) & 1u;
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane / 4, pair = 2 * (lane % 4);  // groupID, first element of the pair
    unsigned* r = reinterpret_cast<const LdmatrixLane*>(lanes[lane])->r;
    for (int m = 0; m < num; ++m) {
      const uint16_t lo = trans ? element(lanes, m, pair, group) : element(lanes, m, group, pair);
      const uint16_t hi = trans ? element(lanes, m, pair + 1, group) : element(lanes, m, group, pair + 1);
      r[m] = unsigned(lo) | unsigned(hi) << 16;
    }
  }
}

struct MmaLane {
  float* d;
  const unsigned* a;
  const unsigned* b;
  const float* c;
};

float to_float(unsigned reg, int half, MmaInput in) {
  const uint16_t bits = uint16_t(reg >> (16 * half));
  return in == MmaInput::bf16 ? half_bits::bf16_bits_to_float(bits) : half_bits::half_bits_to_float(bits);
}

// Runs on the last lane's fiber. shared[0]: the MmaInput. Fragment tables of the PTX
// ISA for m16n8k16 with 16-bit inputs (g = groupID, t = threadID_in_group):
//   A register j = 0..3: row g + 8 (j & 1), columns 2t + 8 (j >> 1) + {0, 1}
//   B register j = 0..1: rows (k) 2t + 8j + {0, 1}, column g
//   C / D element i = 0..3: row g + 8 (i >> 1), column 2t + (i & 1)
void mma_complete(const uint64_t* lanes, const uint64_t* shared, unsigned /*arrived*/) {
  const auto in = MmaInput(shared[0]);
  float a[16][16], b[16][8], acc[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto& op = *reinterpret_cast<const MmaLane*>(lanes[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h) a[g + 8 * (j & 1)][2 * t + 8 * (j >> 1) + h] = to_float(op.a[j], h, in);
    for (int j = 0; j < 2; ++j)
      for (int h = 0; h < 2; ++h) b[2 * t + 8 * j + h][g] = to_float(op.b[j], h, in);
    for (int i = 0; i < 4; ++i) acc[g + 8 * (i >> 1)][2 * t + (i & 1)] = op.c[i];
  }
  // All inputs are gathered before any d is written: d may alias c.
  for (int lane = 0; lane < 32; ++lane) {
    const auto& op = *reinterpret_cast<const MmaLane*>(lanes[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int m = g + 8 * (i >> 1), n = 2 * t + (i & 1);
      float s = acc[m][n];
      for (int k = 0; k < 16; ++k) s += a[m][k] * b[k][n];
      op.d[i] = s;
    }
  }
}

WarpCall matrix_call(const char* name, uint64_t value, uint64_t mode, WarpComplete complete,
                     const std::source_location& loc) {
  WarpCall c;
  c.op = WarpOp::custom;
  c.full_warp = true;
  c.mask = 0xffffffffu;
  c.value = value;
  // The lanes must agree on the instruction (.aligned): its form and its site.
  c.shared[0] = mode;
  c.shared[1] = reinterpret_cast<uint64_t>(loc.file_name());
  c.shared[2] = loc.line();
  c.name = name;
  c.complete = complete;
  c.loc = loc;
  return c;
}

}  // namespace

bool ldmatrix_row(const void* smem, int num, bool trans, const std::source_location& loc) {
  ThreadState& t = self();
  if (t.lane >= unsigned(8 * num)) return false;
  const auto* base = static_cast<const unsigned char*>(t.block->arena->data());
  const auto* p = static_cast<const unsigned char*>(smem);
  const bool in_shared = p >= base && p + kRowBytes <= base + t.block->arena->capacity();
  const bool aligned = reinterpret_cast<uintptr_t>(smem) % kRowBytes == 0;
  if (in_shared && aligned) return true;
  std::ostringstream os;
  os << ldmatrix_name(num, trans) << " at " << loc.file_name() << ':' << loc.line() << " (lane " << t.lane
     << " of warp " << t.warp << ", thread " << thread_pos(*t.block, t.linear) << "): the address " << smem
     << " of row " << t.lane % 8 << " of matrix " << t.lane / 8
     << (in_shared ? " is not 16-byte aligned" : " is not in the block's shared memory");
  fail(*t.block, os.str());
}

void ldmatrix_exchange(unsigned* r, const void* row, int num, bool trans, const std::source_location& loc) {
  LdmatrixLane mine{static_cast<const unsigned char*>(row), r};
  static constexpr const char* kNames[2][3] = {{"ldmatrix.x1", "ldmatrix.x2", "ldmatrix.x4"},
                                               {"ldmatrix.x1.trans", "ldmatrix.x2.trans", "ldmatrix.x4.trans"}};
  const char* name = kNames[trans][num == 4 ? 2 : num - 1];
  warp_collective(matrix_call(name, reinterpret_cast<uint64_t>(&mine), uint64_t(num) | uint64_t(trans) << 8,
                              &ldmatrix_complete, loc));
}

void mma_m16n8k16(float* d, const unsigned* a, const unsigned* b, const float* c, MmaInput in,
                  const std::source_location& loc) {
  MmaLane mine{d, a, b, c};
  const char* name = in == MmaInput::bf16 ? "mma.sync.m16n8k16.bf16" : "mma.sync.m16n8k16.f16";
  warp_collective(matrix_call(name, reinterpret_cast<uint64_t>(&mine), uint64_t(in), &mma_complete, loc));
}

}  // namespace hmoe::emu::detail
