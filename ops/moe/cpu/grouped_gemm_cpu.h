// The CPU grouped GEMM's tiling knobs, exposed so bench/bench_moe.cpp can measure the
// choices (the registered kernel uses the defaults).
#pragma once

#include <cstdint>

#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cpu {

// Tiles depend on the problem shape only (never on the thread count), so results are
// bit-identical for any number of threads; each tile is one single-threaded GEMM call
// (f32: hmoe's packed kernel, whose bits do not depend on the tiling at all).
struct GroupedTiling {
  // Measured with hmoe's kernel (bench_moe BM_choice_tile_rows, T*k = 8192, K = 512,
  // N = 2048, 2 cores, GFLOP/s): 64 x 512 tiles 205, 256 x 512 253, 512 x 1024 268,
  // 1024 x 2048 279, 4096 x 4096 289 (OpenBLAS's Prescott kernels on 1024 x 2048: 61).
  // Each tile packs its own B (K x cols) and A, so tiles stay large; at the model layer's
  // shapes (BM_choice_layer_gemm) 128-row or 256-column tiles measured no faster.
  int64_t max_m = 1024;       // rows of a tile (a group is split evenly into <= max_m blocks)
  int64_t max_n = 2048;       // columns: split while wider than this and the tile is big
  double split_flops = 32e6;  // ... and worth more than this many FLOPs
  // dW tiles: rows (of K) and columns (of N) per GEMM call, each reducing over a whole
  // group (measured: 128 x 512 217 GFLOP/s, 256 x 512 232, 512 x 1024 258, 512 x 2048 255).
  int64_t dw_max_k = 512;
  int64_t dw_max_n = 1024;
  // A call with fewer tiles than this (one or two groups, as the grouped FFN's chunks
  // make) halves the column, then the row, limits (not below min_n / min_m) until it has
  // them, so that every thread gets work; not where it runs on one thread (a pool of one,
  // or inside a parallel region). The bits do not change: f32 on hmoe's kernel does not
  // depend on the tiling, and f64's OpenBLAS calls were measured not to
  // (MoeGroupedFfn.DeterministicAcrossThreadCountsAndRecompute).
  int64_t min_tiles = 8;
  int64_t min_n = 256, min_m = 128;
  // f32 through OpenBLAS on gathered copies (the previous path) instead of hmoe's kernel:
  // kept so bench/bench_moe.cpp can compare the two on the same tiles.
  bool f32_openblas = false;
};

void grouped_gemm_dw_cpu_tiled(const moe::GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                               const Tensor& offsets, const Tensor& dw, const Tensor& db, const GroupedTiling& tiling);

void grouped_gemm_cpu_tiled(const moe::GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                            const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out,
                            const GroupedTiling& tiling);

}  // namespace hmoe::ops::cpu
