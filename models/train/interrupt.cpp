// The signal handlers of InterruptGuard and the one flag they share with the step loop.
#include "models/train/interrupt.h"

#include <atomic>

#include "engine/error.h"

namespace hmoe::train {

namespace {

// The project's one global mutable state beyond the dispatch registry and grad mode, and
// why it must be one: a signal handler receives nothing but the signal number, so what it
// tells the step loop can only live in static storage, and a lock-free atomic is what
// POSIX and C++ let a handler write. It holds the first signal caught, or 0.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

// Async-signal-safe: an atomic exchange, and on the second signal signal() and raise().
void on_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {
    ::signal(sig, SIG_DFL);  // the second: die of it now, as if it had not been caught
    ::raise(sig);
  }
}

}  // namespace

InterruptGuard::InterruptGuard() {
  g_stop_signal.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in flight go on (our I/O retries EINTR too)
  HMOE_CHECK(::sigaction(SIGINT, &sa, &old_int_) == 0 && ::sigaction(SIGTERM, &sa, &old_term_) == 0,
             "train: cannot install the signal handlers");
}

InterruptGuard::~InterruptGuard() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
  g_stop_signal.store(0);
}

int InterruptGuard::requested() const { return g_stop_signal.load(); }

}  // namespace hmoe::train
