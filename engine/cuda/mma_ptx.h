// ldmatrix and mma.sync, the PTX warp-level matrix instructions, for kernel sources of both
// builds: real PTX under nvcc (sm_80 and later), the emulator's full-warp exchanges with
// the PTX ISA's fragment layouts (engine/emu/mma_sync.h) under HMOE_EMU. Unlike WMMA the
// fragment layouts are documented, so a kernel may address shared tiles of any layout
// (e.g. XOR-swizzled, without padding) and use the accumulators in registers.
#pragma once

#include <type_traits>

#include "engine/cuda/device_code.h"

#if defined(HMOE_EMU)
#include <source_location>

#include "engine/emu/mma_sync.h"
// The emulator's wrappers take the call site, for the messages of a misused instruction.
#define HMOE_MMA_SITE , std::source_location loc = std::source_location::current()
#else
#define HMOE_MMA_SITE
#endif

namespace hmoe::device {

/// ldmatrix.sync.aligned.m8n8.x`Num`(.trans if Trans).shared.b16: the warp loads Num
/// 8x8 matrices of 16-bit elements from shared memory. Lane 8i + j passes the address of
/// row j of matrix i (16 bytes, 16-byte aligned; lanes past 8 * Num pass any address);
/// every lane gets r[i] = matrix i's elements (lane / 4, 2 * (lane % 4)) and (lane / 4,
/// 2 * (lane % 4) + 1) in its low and high halves; Trans transposes each matrix (the
/// elements (2 * (lane % 4) + {0, 1}, lane / 4) of the rows as stored). All 32 lanes of
/// the warp must execute the same call.
template <int Num, bool Trans = false>
__device__ __forceinline__ void ldmatrix_m8n8(unsigned (&r)[Num], const void* smem HMOE_MMA_SITE) {
  static_assert(Num == 1 || Num == 2 || Num == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(HMOE_EMU)
  // The lane's own 16-byte row read stays in kernel code, so the access counters see the
  // hardware's request (8 rows of 16 bytes per matrix, one quarter-warp phase each) and
  // TSan sees this lane's shared read.
  uint4 row;
  row.x = row.y = row.z = row.w = 0u;
  if (::hmoe::emu::detail::ldmatrix_row(smem, Num, Trans, loc)) row = *static_cast<const uint4*>(smem);
  ::hmoe::emu::detail::ldmatrix_exchange(r, &row, Num, Trans, loc);
#elif defined(__CUDA_ARCH__)
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (Num == 1 && !Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(s) : "memory");
  else if constexpr (Num == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(s) : "memory");
  else if constexpr (Num == 2 && !Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(s)
                 : "memory");
  else if constexpr (Num == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(s)
                 : "memory");
  else if constexpr (!Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
#else
  (void)r;
  (void)smem;
#endif
}

/// mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32 with T __nv_bfloat16 or __half: D = A B +
/// C over a warp, A 16x16, B 16x8, C and D 16x8 in f32. With g = lane / 4 and t = lane % 4:
/// a[j] holds A(g + 8 (j & 1), 2t + 8 (j >> 1) + {0, 1}); b[j] holds B(2t + 8j + {0, 1},
/// g); c[i] and d[i] are element (g + 8 (i >> 1), 2t + (i & 1)). Pairs are packed low
/// element first. d may be c. All 32 lanes of the warp must execute the same call.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                             const float (&c)[4] HMOE_MMA_SITE) {
#if defined(HMOE_EMU)
  using ::hmoe::emu::detail::MmaInput;
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "mma inputs are bf16 or f16");
  ::hmoe::emu::detail::mma_m16n8k16(d, a, b, c, std::is_same_v<T, __nv_bfloat16> ? MmaInput::bf16 : MmaInput::f16, loc);
#elif defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  (void)d;
  (void)a;
  (void)b;
  (void)c;
#endif
}

}  // namespace hmoe::device

#undef HMOE_MMA_SITE
