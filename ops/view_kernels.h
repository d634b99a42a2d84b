// The kernel contract of the view family (ops/view.cpp): the copy kernel behind
// contiguous(), dtype and device conversion, and its dispatch stub. Filled by CPU:
// ops/cpu/copy.cpp; CUDA: ops/cuda/copy.cu.
#pragma once

#include "engine/tensor.h"
#include "ops/dispatch.h"

namespace hmoe {

// dst[i] = convert(src[i]) over equal shapes, any strides and dtypes, one device.
using CopyKernel = void (*)(const Tensor& src, const Tensor& dst);

HMOE_DECLARE_STUB(CopyKernel, copy_stub);

}  // namespace hmoe
