// Shared by the communicator's tests: the world made by tests/support/dist_main.cpp, the devices
// a backend takes, deterministic per-rank data (small integers, so sums are exact in
// every dtype) and tensors built from it.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/reference.h"
#include "hmoe.h"
#include "tests/support/dist_world.h"
#if defined(HMOE_WITH_CUDA_BACKEND)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::testing::dist {

using hmoe::dist::Communicator;

// The devices this backend's collectives take: the CPU, plus the cuda device where it
// exists and the backend takes it (nccl; mpi only where device memory is host memory).
inline std::vector<Device> devices() {
  std::vector<Device> out{Device::cpu()};
#if defined(HMOE_WITH_CUDA_BACKEND)
  const bool takes_cuda = world().backend() != hmoe::dist::Backend::mpi || cuda::is_emulated();
  if (cuda::device_available() && takes_cuda) out.push_back(Device::cuda(0));
#endif
  return out;
}

inline const std::vector<DType>& reducible_dtypes() {
  static const std::vector<DType> d{DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64};
  return d;
}
inline const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> d{DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::b8};
  return d;
}

// Deterministic per-rank data and the serial references (shared with `hmoe selftest --dist`).
using hmoe::dist::reference::value;
using hmoe::dist::reference::values;

inline Tensor make(const std::vector<double>& v, const Shape& shape, DType dt, Device dev) {
  return from_vector(v, shape, {dt, dev});
}

inline std::string where(Device dev, DType dt) { return dev.str() + " " + std::string(dtype_name(dt)); }

// Each checks one collective on c against the serial reference (every rank's data is a
// function of its rank in c), on every device and the dtypes it takes; seed varies data.
void check_all_reduce(Communicator& c, int64_t seed);
void check_all_gather(Communicator& c, int64_t seed);
void check_broadcast(Communicator& c, int64_t seed);
void check_all_to_all_v(Communicator& c, int64_t seed);

}  // namespace hmoe::testing::dist
