// The grouped GEMM family's second backend on the cuda device: cuBLAS's grouped GEMM
// (moe::GroupedGemmBackend::cublas), and the per-shape choice between it and hmoe's
// kernels (auto_). Called by the cuda kernels of ops/moe/cuda/grouped_gemm.cu when
// GroupedGemmArgs::backend is not hmoe, after they have checked their arguments.
#pragma once

#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cuda {

// GroupedGemmKernel's contract through cuBLAS, or (auto_) through whichever of cuBLAS and
// `hmoe` (the hmoe kernel, called with backend hmoe) this device measured faster for the
// call's shape class; measured here on the first call of a class.
void grouped_gemm_peer(const moe::GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                       const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out,
                       moe::GroupedGemmKernel hmoe);
// GroupedGemmDwKernel's likewise: dW by cuBLAS, db always by `hmoe` (a reduction, no GEMM).
void grouped_gemm_dw_peer(const moe::GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                          const Tensor& offsets, const Tensor& dw, const Tensor& db, moe::GroupedGemmDwKernel hmoe);

}  // namespace hmoe::ops::cuda
