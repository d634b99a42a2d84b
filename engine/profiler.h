// The profiler: while a Profiler is active on a thread, every kernel dispatch on that
// thread records (op, device, wall time, FLOPs, bytes). Inactive, a scope costs one
// thread-local load. Reports aggregate per op; traces export to Chrome's JSON format.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"

namespace hmoe {

struct ProfileEvent {
  const char* name;
  Device device;
  int64_t start_ns;
  int64_t duration_ns;
  double flops;
  double bytes;
  int depth;
};

class Profiler {
 public:
  Profiler();   // activates on the calling thread (nesting restores the outer one)
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  const std::vector<ProfileEvent>& events() const { return events_; }
  // One line per op: calls, total and mean time, GFLOP/s and GB/s where known.
  std::string summary() const;
  // Chrome trace ("chrome://tracing", Perfetto) JSON.
  std::string chrome_trace() const;

  static Profiler* current();
  void record(const ProfileEvent& e) { events_.push_back(e); }
  int depth = 0;

 private:
  Profiler* outer_;
  std::vector<ProfileEvent> events_;
  std::chrono::steady_clock::time_point origin_;
  friend class ProfileScope;
};

// Times the enclosing block as one event of the active profiler, if any.
class ProfileScope {
 public:
  ProfileScope(const char* name, Device device, double flops = 0, double bytes = 0);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;
  void set_work(double flops, double bytes) {
    flops_ = flops;
    bytes_ = bytes;
  }

 private:
  Profiler* prof_;
  const char* name_;
  Device device_;
  double flops_, bytes_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace hmoe
