// A cp.async pipeline kernel for both builds: run by the emulator tests
// (test_emu_async_copy.cpp) and compiled by nvcc to real cp.async PTX (nvcc_sample.cu).
#pragma once

#include "engine/cuda/cp_async.h"
#include "engine/cuda/device_code.h"

namespace hmoe_async_sample {
namespace dev = hmoe::device;

constexpr int kThreads = 64, kStages = 3, kVec = 4;  // 4 floats: one 16-byte copy a thread
constexpr int kChunk = kThreads * kVec;              // floats a stage holds

// out[c * kChunk + i] = in[c * kChunk + (kChunk - 1 - i)]: every thread reads what other
// threads copied, through a kStages-deep ring of cp.async stages (the GEMM main loop's
// pattern: wait for the oldest stage, barrier, refill the stage read last, compute).
__global__ void __launch_bounds__(kThreads) ring_reverse(const float* in, float* out, int chunks) {
  HMOE_DYNAMIC_SHARED(float, ring);
  const int t = int(threadIdx.x);
  auto issue = [&](int c) {
    dev::cp_async_16(ring + (c % kStages) * kChunk + t * kVec, in + c * kChunk + t * kVec, 16);
  };
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < chunks) issue(c);
    dev::cp_async_commit();
  }
  for (int c = 0; c < chunks; ++c) {
    dev::cp_async_wait<kStages - 2>();
    __syncthreads();  // every thread's copies of chunk c landed; chunk c - 1 was read by all
    if (c + kStages - 1 < chunks) issue(c + kStages - 1);
    dev::cp_async_commit();
    const float* s = ring + (c % kStages) * kChunk;
    for (int e = 0; e < kVec; ++e) out[c * kChunk + t * kVec + e] = s[kChunk - 1 - (t * kVec + e)];
  }
}

}  // namespace hmoe_async_sample
