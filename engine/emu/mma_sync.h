// ldmatrix and mma.sync emulation: the PTX warp-level matrix instructions as full-warp
// rendezvous that move each lane's registers exactly as the PTX ISA's fragment tables say.
#pragma once

#include <cstdint>
#include <source_location>

namespace hmoe::emu::detail {

/// The 16-bit input type of an mma.sync (both multiplicands hold it).
enum class MmaInput : uint8_t { bf16, f16 };

/// Checks the calling lane's ldmatrix row address for an .x`num` (.trans) load and says whether
/// the lane supplies a row: lanes 0 to 8 * num - 1 do (lane 8i + j: row j of matrix i),
/// the others' addresses are ignored (sm_80 and later). A supplied address must be
/// 16-byte aligned and lie inside the block's shared memory; else the block fails with
/// the call's site. The caller then reads the 16-byte row itself (kernel code: the
/// access counters and TSan see one 16-byte shared load of this lane).
bool ldmatrix_row(const void* smem, int num, bool trans, const std::source_location& loc);

/// The warp-collective part of ldmatrix.sync.aligned.m8n8.x`num`(.trans).shared.b16:
/// every lane of the warp passes the row it read (ignored for lanes that supply none)
/// and receives r[0..num): r[i] holds matrix i's elements (lane / 4, 2 * (lane % 4) + {0,
/// 1}) in its low and high halves, or with `trans` the elements (2 * (lane % 4) + {0, 1},
/// lane / 4) of the rows as stored. All 32 lanes must make the same call (same site,
/// num and trans).
void ldmatrix_exchange(unsigned* r, const void* row, int num, bool trans, const std::source_location& loc);

/// mma.sync.aligned.m16n8k16.row.col.f32.<in>.<in>.f32 for the whole warp: each lane
/// passes its fragments (a: 4 registers, b: 2, c and d: 4 floats, as the PTX ISA lays
/// them out over groupID = lane / 4 and threadID_in_group = lane % 4) and receives d.
/// D[m][n] = C[m][n] + A[m][0] * B[0][n] + ... + A[m][15] * B[15][n], added left to
/// right in f32 (each product is exact in f32 for bf16 and f16 inputs); d may alias c.
void mma_m16n8k16(float* d, const unsigned* a, const unsigned* b, const float* c, MmaInput in,
                  const std::source_location& loc);

}  // namespace hmoe::emu::detail
