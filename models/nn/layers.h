/// @file
/// Standard layers: Linear, Embedding, LayerNorm, RMSNorm, and a GELU MLP.
#pragma once

#include "autograd/grad_mode.h"
#include "engine/rng.h"
#include "engine/shape.h"
#include "models/nn/module.h"

namespace hmoe::nn {

/// A Linear layer's size: weight [out, in], and bias [out] if `bias`.
struct LinearShape {
  /// @{
  /// Input and output features.
  int64_t in = 0, out = 0;
  /// @}
  bool bias = true;  ///< whether there is a bias
  /// Sizes come from configs: a product that overflows is an error, not a wrapped count.
  int64_t numel() const {
    return checked_add(checked_mul(in, out, "linear: in x out"), bias ? out : 0, "linear: parameters");
  }
};

/// y = x W^T + b over the last dim of x.
class Linear : public Module {
 public:
  /// weight [out, in] and bias [out] ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in, int64_t out, bool bias, Generator& gen);
  /// The layer of shape s.
  Linear(const LinearShape& s, Generator& gen) : Linear(s.in, s.out, s.bias, gen) {}
  /// x [..., in] -> [..., out].
  Tensor forward(const Tensor& x) const;
  /// @{
  /// weight [out, in]; bias [out] (undefined without one).
  Tensor weight, bias;
  /// @}
};

/// A lookup table of `num` vectors of size `dim`.
class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& gen);  ///< N(0, 1)
  /// ids (integer, any shape) -> [..., dim].
  Tensor forward(const Tensor& ids) const;
  Tensor weight;  ///< [num, dim]
};

/// Layer normalisation over the last dim, with a learned scale and (optionally) shift.
class LayerNorm : public Module {
 public:
  /// weight ones and bias zeros over `dim` features.
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool bias = true);
  /// Normalises x over its last dim.
  Tensor forward(const Tensor& x) const;
  /// @{
  /// weight [dim] (ones at first); bias [dim] (zeros at first; undefined without one).
  Tensor weight, bias;
  /// @}
  double eps;  ///< added to the variance
};

/// RMS normalisation over the last dim, with a learned scale.
class RMSNorm : public Module {
 public:
  /// weight ones over `dim` features.
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  /// Normalises x over its last dim.
  Tensor forward(const Tensor& x) const;
  Tensor weight;  ///< [dim], ones at first
  double eps;     ///< added to the mean square
};

/// Two Linear layers with a GELU between: proj(gelu(fc(x))).
class MLP : public Module {
 public:
  /// fc [in -> hidden] and proj [hidden -> out], with biases.
  MLP(int64_t in, int64_t hidden, int64_t out, Generator& gen);
  /// x [..., in] -> [..., out].
  Tensor forward(const Tensor& x) const;
  /// @{
  /// The two layers.
  std::shared_ptr<Linear> fc, proj;
  /// @}
};

}  // namespace hmoe::nn
