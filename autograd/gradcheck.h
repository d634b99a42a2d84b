// gradcheck: compares an op's backward against central finite differences in f64
// on the CPU, through random projections of the output (vector-Jacobian products).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  int projections = 2;  // random output weightings checked
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string message;  // where and by how much it failed
  explicit operator bool() const { return ok; }
};

// fn takes the inputs and returns one tensor. Inputs that require grad must be f64
// CPU tensors; each of their elements is perturbed by +-eps.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opts = {});

}  // namespace hmoe::autograd
