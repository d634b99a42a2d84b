// The kernel contract of the reduction family (ops/reduce.cpp): the reduce kernel and
// its dispatch stub. Filled by CPU: ops/cpu/reduce.cpp; CUDA: ops/cuda/reduce.cu.
#pragma once

#include <cstdint>

#include "engine/tensor.h"
#include "ops/dispatch.h"

namespace hmoe {

enum class ReduceOp : uint8_t { sum, max, min, argmax, argmin, logsumexp };

// `in` is contiguous and viewed as [outer, red, inner]; out is contiguous [outer,
// inner]. argmax/argmin write i64 indices (first of ties).
using ReduceKernel = void (*)(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red,
                              int64_t inner);

HMOE_DECLARE_STUB(ReduceKernel, reduce_stub);

}  // namespace hmoe
