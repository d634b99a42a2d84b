// Standard layers: Linear, Embedding, LayerNorm, RMSNorm, and a GELU MLP.
#pragma once

#include "autograd/grad_mode.h"
#include "engine/rng.h"
#include "engine/shape.h"
#include "models/nn/module.h"

namespace hmoe::nn {

// A Linear layer's size: weight [out, in], and bias [out] if `bias`.
struct LinearShape {
  int64_t in = 0, out = 0;
  bool bias = true;
  // Sizes come from configs: a product that overflows is an error, not a wrapped count.
  int64_t numel() const {
    return checked_add(checked_mul(in, out, "linear: in x out"), bias ? out : 0, "linear: parameters");
  }
};

class Linear : public Module {
 public:
  // weight [out, in] and bias [out] ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in, int64_t out, bool bias, Generator& gen);
  Linear(const LinearShape& s, Generator& gen) : Linear(s.in, s.out, s.bias, gen) {}
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& gen);  // N(0, 1)
  Tensor forward(const Tensor& ids) const;
  Tensor weight;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool bias = true);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const;
  Tensor weight;
  double eps;
};

class MLP : public Module {
 public:
  MLP(int64_t in, int64_t hidden, int64_t out, Generator& gen);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> fc, proj;
};

}  // namespace hmoe::nn
