// The communicator watchdog: one thread per watched communicator that wakes 20 times
// per timeout, stamps the call on the host when it first sees it, drops completed
// asynchronous calls, polls the backend for errors and ends the job when the oldest
// unfinished call is older than the timeout.
#include "engine/dist/watchdog.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace hmoe::dist {

Watchdog::Watchdog(std::string who, double timeout_s, WatchdogActions actions)
    : who_(std::move(who)),
      timeout_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s))),
      // Wake 20 times per timeout (between 5 ms and 200 ms): a hang is reported at most
      // 5% late, and an idle communicator costs a few wake-ups per second.
      period_(std::clamp<Clock::duration>(timeout_ / 20, std::chrono::milliseconds(5), std::chrono::milliseconds(200))),
      actions_(std::move(actions)) {
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::begin(const char* op, uint64_t seq, double bytes) {
  // Release stores throughout: a reader that sees this op has seen the previous end().
  active_op_.store(op, std::memory_order_release);
  active_bytes_.store(bytes, std::memory_order_release);
  active_seq_.store(seq, std::memory_order_release);
}

void Watchdog::end() { active_seq_.store(0, std::memory_order_release); }

void Watchdog::until_done(std::function<bool()> done) {
  const uint64_t seq = active_seq_.load(std::memory_order_relaxed);
  if (seq == 0) return;
  std::lock_guard<std::mutex> lk(mu_);
  drop_completed();  // keeps the queue short when nobody waits on the stream for a while
  queued_.push_back(Call{active_op_.load(std::memory_order_relaxed), seq, active_bytes_.load(std::memory_order_relaxed),
                         Clock::now(), std::move(done)});
}

void Watchdog::drop_completed() {
  while (!queued_.empty() && queued_.front().done()) queued_.pop_front();
}

std::optional<Watchdog::Call> Watchdog::host_call(Clock::time_point now) {
  const uint64_t seq = active_seq_.load(std::memory_order_acquire);
  if (seq == 0) return std::nullopt;
  // An op or bytes of a later call carry that call's preceding end(), so the second
  // read of seq then differs: equal reads mean op and bytes are this call's.
  const char* op = active_op_.load(std::memory_order_acquire);
  const double bytes = active_bytes_.load(std::memory_order_acquire);
  if (active_seq_.load(std::memory_order_acquire) != seq) return std::nullopt;  // it ended meanwhile
  if (seq != seen_seq_) {
    seen_seq_ = seq;
    seen_at_ = now;
  }
  return Call{op, seq, bytes, seen_at_, {}};
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, period_);
    if (stop_) break;
    drop_completed();
    const auto now = Clock::now();
    const std::optional<Call> host = host_call(now);
    // Queued calls started before the one on the host now.
    const Call* oldest = !queued_.empty() ? &queued_.front() : (host ? &*host : nullptr);
    const auto describe = [&](const Call& c) {
      std::ostringstream os;
      os << c.op << " #" << c.seq << " (" << c.bytes << " bytes";
      if (c.done) os << ", queued on the device";
      os << ")";
      return os.str();
    };
    if (actions_.poll) {
      const std::string error = actions_.poll();
      if (!error.empty())
        fire("the backend reported an asynchronous error during " +
             (oldest ? describe(*oldest) : std::string("no collective (idle)")) + ": " + error);
    }
    if (oldest && now - oldest->start > timeout_) {
      std::ostringstream os;
      os << describe(*oldest) << " has not completed after " << std::chrono::duration<double>(timeout_).count()
         << " s (Options::timeout_s): a rank did not join it, or joined another collective";
      fire(os.str());
    }
  }
}

void Watchdog::fire(const std::string& what) {
  std::fprintf(stderr, "hmoe %s: %s; ending the job (exit code %d)\n", who_.c_str(), what.c_str(), kExitCode);
  std::fflush(stderr);
  if (actions_.abort_backend) actions_.abort_backend();
  if (actions_.end_job) actions_.end_job(kExitCode);
  std::_Exit(kExitCode);  // end_job does not return; without one, this process ends alone
}

}  // namespace hmoe::dist
