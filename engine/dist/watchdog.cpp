// The communicator watchdog: one thread per watched communicator that wakes a few
// times per timeout, drops completed asynchronous calls, polls the backend for errors
// and ends the job when the oldest unfinished call is older than the timeout.
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
  std::lock_guard<std::mutex> lk(mu_);
  drop_completed();  // keeps the queue short when nobody waits on the stream for a while
  active_ = Call{op, seq, bytes, Clock::now(), {}};
}

void Watchdog::end() {
  std::lock_guard<std::mutex> lk(mu_);
  active_.reset();
}

void Watchdog::until_done(std::function<bool()> done) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!active_) return;
  Call c = *active_;
  c.done = std::move(done);
  queued_.push_back(std::move(c));
}

void Watchdog::drop_completed() {
  while (!queued_.empty() && queued_.front().done()) queued_.pop_front();
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, period_);
    if (stop_) break;
    drop_completed();
    // Queued calls started before the one on the host now.
    const Call* oldest = !queued_.empty() ? &queued_.front() : (active_ ? &*active_ : nullptr);
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
    if (oldest && Clock::now() - oldest->start > timeout_) {
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
