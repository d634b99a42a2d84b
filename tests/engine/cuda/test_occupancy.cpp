// Theoretical occupancy against hand-worked cases of the occupancy calculator's rules
// (sm_80: 64K registers in 4 sub-partitions, 256-register warp units, 64 warps, 32
// blocks, 164 KiB shared memory with 1 KiB reserved per block; sm_90: 228 KiB), and the
// ptxas table reader.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/cuda/occupancy.h"
#include "engine/error.h"

namespace {
using namespace hmoe::cuda;

TEST(Occupancy, FullWhenNothingLimits) {
  // 256 threads = 8 warps; 32 regs -> 1024 a warp, 16 warps a sub-partition, 64 an SM.
  const Occupancy o = occupancy({32, 0}, {256, 0}, kSm80);
  EXPECT_EQ(o.by_warps, 8);
  EXPECT_EQ(o.by_registers, 8);
  EXPECT_EQ(o.by_smem, 164);  // 1 KiB reserved per block
  EXPECT_EQ(o.blocks, 8);
  EXPECT_DOUBLE_EQ(o.fraction, 1.0);
  EXPECT_EQ(o.limiter, "registers + warps");
  EXPECT_TRUE(o.invalid.empty());
}

TEST(Occupancy, SharedMemoryLimits) {
  // 48 KiB static + 1 KiB reserved = 50176 B: 3 blocks in 164 KiB, 4 in 228 KiB.
  const Occupancy a = occupancy({64, 48 * 1024}, {128, 0}, kSm80);
  EXPECT_EQ(a.by_registers, 8);  // 64 regs -> 2048 a warp, 8 warps a sub-partition
  EXPECT_EQ(a.by_smem, 3);
  EXPECT_EQ(a.blocks, 3);
  EXPECT_EQ(a.warps, 12);
  EXPECT_DOUBLE_EQ(a.fraction, 0.1875);
  EXPECT_EQ(a.limiter, "shared memory");
  const Occupancy h = occupancy({64, 16 * 1024}, {128, 32 * 1024}, kSm90);
  EXPECT_EQ(h.by_smem, 4);
  EXPECT_DOUBLE_EQ(h.fraction, 0.25);
  // Allocation granularity: 1 byte of dynamic memory costs a 128-byte unit.
  EXPECT_EQ(occupancy({32, 0}, {32, 40 * 1024 + 1}, kSm80).by_smem, 167936 / (40 * 1024 + 1024 + 128));
}

TEST(Occupancy, RegistersLimit) {
  // 40 regs -> 1280 a warp: 12 warps a sub-partition (not 12.8), 48 an SM, 16 blocks of 3 warps.
  const Occupancy a = occupancy({40, 0}, {96, 0}, kSm80);
  EXPECT_EQ(a.by_registers, 16);
  EXPECT_EQ(a.by_warps, 21);
  EXPECT_EQ(a.blocks, 16);
  EXPECT_DOUBLE_EQ(a.fraction, 0.75);
  EXPECT_EQ(a.limiter, "registers");
  // 255 regs round up to 8192 a warp: 2 warps a sub-partition, one block of 8 warps.
  const Occupancy b = occupancy({255, 0}, {256, 0}, kSm90);
  EXPECT_EQ(b.blocks, 1);
  EXPECT_DOUBLE_EQ(b.fraction, 0.125);
  EXPECT_EQ(b.limiter, "registers");
  // 33 regs: 1056 a warp rounds up to 1280.
  EXPECT_EQ(occupancy({33, 0}, {32, 0}, kSm80).by_registers, 48);
}

TEST(Occupancy, BlockCountLimits) {
  // One warp a block, few registers: the 32-block limit gives 32 of 64 warps.
  const Occupancy o = occupancy({16, 0}, {32, 0}, kSm90);
  EXPECT_EQ(o.blocks, 32);
  EXPECT_DOUBLE_EQ(o.fraction, 0.5);
  EXPECT_EQ(o.limiter, "blocks");
}

TEST(Occupancy, LaunchesThatFail) {
  // 72 regs x 1024 threads = 73728 > 65536 registers.
  EXPECT_NE(occupancy({72, 0}, {1024, 0}, kSm80).invalid.find("register file"), std::string::npos);
  EXPECT_FALSE(occupancy({300, 0}, {32, 0}, kSm80).invalid.empty());
  EXPECT_FALSE(occupancy({32, 0}, {2048, 0}, kSm80).invalid.empty());
  EXPECT_FALSE(occupancy({32, 0}, {128, 200 * 1024}, kSm80).invalid.empty());  // fits sm_90 only
  EXPECT_TRUE(occupancy({32, 0}, {128, 200 * 1024}, kSm90).invalid.empty());
}

TEST(Occupancy, ReadsThePtxasTable) {
  const auto path = std::filesystem::temp_directory_path() / "hmoe_test_ptxas_kernels.tsv";
  {
    std::ofstream f(path);
    f << "kernel\tarch\tregisters\tstack_bytes\tspill_stores\tspill_loads\tlmem_bytes\tgated\tsmem_bytes\n"
      << "void hmoe::(anonymous namespace)::copy<float>(float const*, float*)\tsm_80\t16\t0\t0\t0\t0\t1\t0\n"
      << "void hmoe::(anonymous namespace)::copy<float>(float const*, float*)\tsm_90\t18\t0\t0\t0\t0\t1\t0\n"
      << "void hmoe::gemm<64>(float*)\tsm_80\t128\t0\t0\t0\t0\t1\t16384\n";
  }
  const auto t = read_ptxas_table(path.string());
  ASSERT_EQ(t.size(), 3u);
  const PtxasKernel* k =
      find_ptxas_kernel(t, "hmoe::(anonymous namespace)::copy<float>(float const*, float*)", "sm_90");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->resources.registers, 18);
  const PtxasKernel* g = find_ptxas_kernel(t, "void hmoe::gemm<64>(float*)", "sm_80");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->resources.static_smem, 16384u);
  EXPECT_EQ(find_ptxas_kernel(t, "hmoe::gemm<32>", "sm_80"), nullptr);
  {
    std::ofstream f(path);
    f << "kernel\tarch\tregisters\nx\tsm_80\tmany\n";
  }
  EXPECT_THROW(read_ptxas_table(path.string()), hmoe::Error);
  std::filesystem::remove(path);
  EXPECT_THROW(read_ptxas_table(path.string()), hmoe::Error);
}

}  // namespace
