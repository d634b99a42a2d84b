/// @file
/// Grad mode: a thread-local switch that says whether ops record graph nodes.
#pragma once

namespace hmoe::autograd {

/// Whether ops record graph nodes on this thread (on by default).
bool grad_enabled();
/// Turns recording on or off on this thread.
void set_grad_enabled(bool on);

/// RAII: turns recording off (or on) for its scope, restoring the previous mode.
class GradModeGuard {
 public:
  /// Sets the mode to `on` until the guard dies.
  explicit GradModeGuard(bool on) : prev_(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeGuard() { set_grad_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

/// Turns recording off for its scope (inference, optimiser updates).
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

}  // namespace hmoe::autograd

namespace hmoe {
using autograd::NoGradGuard;
}
