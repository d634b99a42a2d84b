/// @file
/// Grouped GEMM: Y_g = X_g W_g for row groups g given by offsets (m_g may be 0), with a
/// gather index fused into the A-load, a per-row scale and a per-group bias in the
/// epilogue, and gradients to X (scattered back deterministically), each W_g (zero for
/// empty groups), the scale and the bias.
#pragma once

#include <cstdint>
#include <string_view>

#include "engine/tensor.h"

namespace hmoe::moe {

/// Which grouped GEMM runs on the cuda device (the CPU has one and ignores the choice).
enum class GroupedGemmBackend : uint8_t {
  hmoe,    ///< this project's kernels (the default; deterministic to the bit)
  cublas,  ///< cuBLAS's grouped GEMM (cublasGemmGroupedBatchedEx; f32, bf16 and f16), the gather, the FFN's
           ///< activation steps, bias and scale done as separate passes around it
           ///< (ops/moe/cuda/grouped_gemm_cublas.cpp): other rounding, other bits
  auto_    ///< per shape class (what is computed, dtype, G, k, n, rows to a power of two), the faster of the two,
           ///< timed once per process and device on a real GPU; hmoe under the emulator (whose timings say
           ///< nothing of a GPU) and for f64. Results may then differ between processes that chose differently.
};
/// "hmoe", "cublas" or "auto".
std::string_view name(GroupedGemmBackend b);
/// The backend of that name; another name is an hmoe::Error listing the three.
GroupedGemmBackend parse_grouped_gemm_backend(std::string_view s);

/// w [G, K, N]; offsets i64 [G + 1] on the CPU, non-decreasing from 0 to M.
/// Row r of group g: y[r] = scale[r] * (xrow(r) W_g + bias[g]) with xrow(r) = x[index[r]]
/// when index (i32/i64 [M], values in [-1, rows of x); -1 reads a zero row) is given,
/// else x[r] (x [M, K]). scale [M] and bias [G, N] optional. -> [M, N] in x's dtype
/// (f32 / f64; bf16 / f16: on the cuda device native on tensor cores, f32 accumulation,
/// scale and bias taken in f32; on the CPU computed in f32). Deterministic for any thread
/// count and any emulator schedule. A gather index on the cuda device is read back once
/// to be validated (one device-to-host copy of M indices). backend: forward and backward.
Tensor grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& offsets, const Tensor& index = Tensor(),
                    const Tensor& scale = Tensor(), const Tensor& bias = Tensor(),
                    GroupedGemmBackend backend = GroupedGemmBackend::hmoe);

}  // namespace hmoe::moe
