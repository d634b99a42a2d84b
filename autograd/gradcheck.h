/// @file
/// gradcheck: compares an op's backward against central finite differences in f64
/// on the CPU, through random projections of the output (vector-Jacobian products).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::autograd {

/// How gradcheck perturbs and compares.
struct GradcheckOptions {
  double eps = 1e-6;     ///< finite-difference step
  double atol = 1e-6;    ///< absolute tolerance: |analytic - numeric| <= atol + rtol |numeric|
  double rtol = 1e-4;    ///< relative tolerance
  int projections = 2;   ///< random output weightings checked
  uint64_t seed = 1234;  ///< seed of the random output weightings
};

/// What gradcheck found.
struct GradcheckResult {
  bool ok = true;            ///< whether every gradient matched
  double max_abs_error = 0;  ///< the largest |analytic - numeric| seen
  std::string message;       ///< where and by how much it failed
  /// ok.
  explicit operator bool() const { return ok; }
};

/// fn takes the inputs and returns one tensor. Inputs that require grad must be f64
/// CPU tensors; each of their elements is perturbed by +-eps.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opts = {});

}  // namespace hmoe::autograd
