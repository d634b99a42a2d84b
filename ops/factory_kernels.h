// The kernel contract of the factory family (ops/factory.cpp): kernel signatures and
// their dispatch stubs. Filled by CPU: ops/cpu/factory.cpp; CUDA: ops/cuda/factory.cu.
#pragma once

#include <cstdint>

#include "engine/tensor.h"
#include "ops/dispatch.h"

namespace hmoe {

using FillKernel = void (*)(const Tensor& out, double value);  // out may be strided
using ArangeKernel = void (*)(const Tensor& out, double start, double step);
enum class RandomKind : uint8_t { uniform, normal };
using RandomKernel = void (*)(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b);

HMOE_DECLARE_STUB(FillKernel, fill_stub);
HMOE_DECLARE_STUB(ArangeKernel, arange_stub);
HMOE_DECLARE_STUB(RandomKernel, random_stub);

}  // namespace hmoe
