// Optimisers (SGD with momentum, AdamW), learning-rate schedules and global-norm
// clipping, on any device (the fused updates of ops/optim.h). Updates run in place
// under no-grad; bf16/f16 parameters get f32 master weights; state is exposed as named
// tensors so checkpoints can save and restore it exactly.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::optim {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  int64_t step_count() const { return steps_; }
  // Per-parameter state tensors, named "<index>.<what>".
  virtual std::vector<std::pair<std::string, Tensor>> state_tensors() const = 0;
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) = 0;

 protected:
  // "<index>.master" entries for the parameters that have master weights.
  void append_master_state(std::vector<std::pair<std::string, Tensor>>& s) const;
  void load_master_state(const std::vector<std::pair<std::string, Tensor>>& state);
  size_t master_state_count() const;

  std::vector<Tensor> params_;
  // f32 master weights of bf16/f16 parameters (undefined where the parameter is f32/f64):
  // updates run on the master, the parameter receives its rounded copy.
  std::vector<Tensor> masters_;
  double lr_ = 1e-3;
  int64_t steps_ = 0;
};

struct SGDOptions {
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};

class SGD final : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions o);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state_tensors() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) override;

 private:
  SGDOptions o_;
  std::vector<Tensor> buf_;  // momentum buffers (f64 for f64 params, else f32)
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

// AdamW (Loshchilov & Hutter): decoupled decay p -= lr*wd*p, bias-corrected moments
// kept in f32 (f64 for f64 parameters), one fused kernel per parameter on its device.
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions o);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state_tensors() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) override;

 private:
  AdamWOptions o_;
  std::vector<Tensor> m_, v_;
};

// Linear warm-up from 0 to lr over `warmup` steps, then cosine decay to min_lr at `total`.
double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr);

// The sum of the squares of every element of `tensors`, accumulated in f64 in their order
// (one host read per device). Finite exactly when every element is: the largest half or
// float squared is far below f64's range.
double sum_of_squares(const std::vector<Tensor>& tensors);

// Scales every gradient so their global L2 norm is at most max_norm; returns the norm
// before clipping (computed in f64, in parameter order).
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace hmoe::optim
