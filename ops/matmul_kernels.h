// The kernel contract of the matmul family (ops/matmul.cpp): the GEMM kernel and its
// dispatch stub. Filled by CPU: ops/cpu/matmul.cpp (hmoe's packed f32 kernel in
// ops/cpu/gemm_kernel.cpp, OpenBLAS for f64); CUDA: ops/cuda/matmul.cpp (the backend's
// BLAS layer, engine/cuda/blas.h).
#pragma once

#include "engine/tensor.h"
#include "ops/dispatch.h"
#include "ops/matmul.h"

namespace hmoe {

// c = alpha op(a) op(b) + beta c as GemmArgs describes (row-major matrices, leading
// dimensions and batch strides in elements); a, b and c of one dtype.
using GemmKernel = void (*)(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c);

HMOE_DECLARE_STUB(GemmKernel, gemm_stub);

}  // namespace hmoe
