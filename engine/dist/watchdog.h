// The watchdog of one communicator: a thread that ends the whole job when a collective
// has not completed within the timeout, or when the backend reports an asynchronous
// error, after printing the rank, the communicator, the collective and its sequence
// number. Internal to engine/dist.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace hmoe::dist {

struct WatchdogActions {
  std::function<std::string()> poll;      // an asynchronous error of the backend, "" if none (optional)
  std::function<void()> abort_backend;    // run before the job is ended (optional)
  std::function<void(int code)> end_job;  // ends every rank of the job; does not return
};

class Watchdog {
 public:
  // Exit code of a job the watchdog ends (as timeout(1)'s).
  static constexpr int kExitCode = 124;

  // who: "dist[mpi] rank 1 of 2 in world (world rank 1)", for the message.
  Watchdog(std::string who, double timeout_s, WatchdogActions actions);
  ~Watchdog();  // stops the thread
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The host side of a call, watched from begin to end. Lock-free and without a clock
  // read (a small collective takes about a microsecond): the watchdog's thread stamps
  // a call when it first sees it, so a timeout fires up to one wake-up late.
  void begin(const char* op, uint64_t seq, double bytes);
  void end();
  // The current call (between begin and end) stays watched after end until done()
  // returns true (asynchronous backends: its work is queued on a stream). Calls
  // complete in the order they were queued.
  void until_done(std::function<bool()> done);

 private:
  using Clock = std::chrono::steady_clock;
  struct Call {
    const char* op;
    uint64_t seq;
    double bytes;
    Clock::time_point start;
    std::function<bool()> done;  // empty for the host part
  };
  void loop();
  void drop_completed();  // with mu_ held
  // The call on the host now, if any, as the watchdog's thread sees it.
  std::optional<Call> host_call(Clock::time_point now);
  [[noreturn]] void fire(const std::string& what);

  std::string who_;
  Clock::duration timeout_, period_;
  WatchdogActions actions_;
  // The call on the host: written by begin/end, read by the watchdog's thread (seq 0:
  // none; op and bytes are valid while seq reads the same before and after them).
  std::atomic<uint64_t> active_seq_{0};
  std::atomic<const char*> active_op_{nullptr};
  std::atomic<double> active_bytes_{0};
  uint64_t seen_seq_ = 0;  // the watchdog thread's: the call it stamped, and when
  Clock::time_point seen_at_{};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<Call> queued_;  // asynchronous calls not yet complete, oldest first
  std::thread thread_;
};

}  // namespace hmoe::dist
