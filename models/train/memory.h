/// @file
/// The memory a model needs, estimated from its config before anything is allocated, and
/// the check that refuses what cannot fit: a model of 16 T parameters, or a crafted
/// checkpoint claiming one, is an error in a moment instead of minutes of allocation.
#pragma once

#include <cstdint>
#include <string>

#include "engine/device.h"
#include "models/train/config.h"

namespace hmoe::train {

/// Bytes, roughly but not flatteringly. What is counted: the parameters as held (f32, or
/// bf16/f16 with their f32 master copies in the optimizer), their gradients, AdamW's two
/// f32 moments, and the activations a step keeps for its backward: per token and layer
/// about 12 x d_model values (norms, q/k/v, attention output, projections, residuals)
/// plus 2 x the FFN width (d_ff, times top_k for MoE), and per token 3 f32 vectors of the
/// vocabulary (logits, their f32 copy and gradient). Not counted: transient buffers
/// inside ops, the allocator's caching and fragmentation, the data and the code, so the
/// true peak is higher.
struct MemoryEstimate {
  double parameters = 0;  ///< the count
  /// @{
  /// Bytes of the weights, gradients, optimiser state and activations.
  double weights = 0, gradients = 0, optimizer = 0, activations = 0;
  /// @}
  /// The sum of the four.
  double total() const { return weights + gradients + optimizer + activations; }
  std::string str() const;  ///< "about 1.2 GiB (weights ..., gradients ..., optimizer ..., activations ...)"
};

/// Training: the model, its optimiser state and a step of train.batch_size sequences.
MemoryEstimate estimate_training_memory(const Config& c);
/// Evaluation or sampling: the weights (built in f32 first) and the activations of one
/// layer for `batch` sequences of the block size (no gradients are kept).
MemoryEstimate estimate_inference_memory(const model::ModelConfig& m, int64_t batch);

/// Refuses, with an hmoe::Error starting with `what` and giving the estimate, what exceeds
/// the machine's physical memory or, on a cuda device, the device's memory.
void check_memory(const MemoryEstimate& e, const Device& device, const std::string& what);

}  // namespace hmoe::train
