/// @file
/// Ctrl-C and `kill` during training: while an InterruptGuard lives, the first SIGINT or
/// SIGTERM only asks the step loop to stop (it finishes the step, saves a checkpoint and
/// returns); a second one ends the process at once, as the signal would have.
#pragma once

#include <signal.h>

namespace hmoe::train {

/// The exit status of `hmoe train` stopped by a signal after saving (EX_TEMPFAIL of
/// sysexits.h: the run can go on, with --resume).
inline constexpr int kExitInterrupted = 75;

/// Turns the first SIGINT / SIGTERM into a stop request while it lives (see the file's
/// description).
class InterruptGuard {
 public:
  InterruptGuard();   ///< installs the handlers (one guard at a time)
  ~InterruptGuard();  ///< puts the previous handlers back
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  /// The signal that asked the loop to stop (SIGINT or SIGTERM), or 0.
  int requested() const;

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

}  // namespace hmoe::train
