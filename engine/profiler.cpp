// Profiler sessions (thread-local activation), scopes, and their reports.
#include "engine/profiler.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

namespace hmoe {
namespace {
thread_local Profiler* t_profiler = nullptr;
}

Profiler::Profiler() : outer_(t_profiler), origin_(std::chrono::steady_clock::now()) { t_profiler = this; }
Profiler::~Profiler() { t_profiler = outer_; }
Profiler* Profiler::current() { return t_profiler; }

ProfileScope::ProfileScope(const char* name, Device device, double flops, double bytes)
    : prof_(t_profiler), name_(name), device_(device), flops_(flops), bytes_(bytes) {
  if (prof_) {
    ++prof_->depth;
    start_ = std::chrono::steady_clock::now();
  }
}

ProfileScope::~ProfileScope() {
  if (!prof_) return;
  const auto end = std::chrono::steady_clock::now();
  --prof_->depth;
  prof_->record({name_, device_, std::chrono::duration_cast<std::chrono::nanoseconds>(start_ - prof_->origin_).count(),
                 std::chrono::duration_cast<std::chrono::nanoseconds>(end - start_).count(), flops_, bytes_,
                 prof_->depth});
}

std::string Profiler::summary() const {
  struct Agg {
    int64_t calls = 0, ns = 0;
    double flops = 0, bytes = 0;
  };
  std::map<std::string, Agg> by_op;
  for (const ProfileEvent& e : events_) {
    Agg& a = by_op[std::string(e.name) + " (" + e.device.str() + ")"];
    ++a.calls;
    a.ns += e.duration_ns;
    a.flops += e.flops;
    a.bytes += e.bytes;
  }
  std::vector<std::pair<std::string, Agg>> rows(by_op.begin(), by_op.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "%-36s %8s %12s %10s %10s %10s\n", "op", "calls", "total ms", "mean us", "GFLOP/s",
                "GB/s");
  os << line;
  for (const auto& [name, a] : rows) {
    const double s = double(a.ns) * 1e-9;
    std::snprintf(line, sizeof line, "%-36s %8lld %12.3f %10.1f %10.2f %10.2f\n", name.c_str(),
                  static_cast<long long>(a.calls), s * 1e3, s * 1e6 / double(a.calls),
                  a.flops > 0 ? a.flops / s * 1e-9 : 0.0, a.bytes > 0 ? a.bytes / s * 1e-9 : 0.0);
    os << line;
  }
  return os.str();
}

std::string Profiler::chrome_trace() const {
  std::ostringstream os;
  os << "{\"traceEvents\": [";
  for (size_t i = 0; i < events_.size(); ++i) {
    const ProfileEvent& e = events_[i];
    os << (i ? ",\n" : "\n") << "{\"name\": \"" << e.name << "\", \"cat\": \"" << e.device.str()
       << "\", \"ph\": \"X\", \"pid\": 0, \"tid\": 0, \"ts\": " << double(e.start_ns) * 1e-3
       << ", \"dur\": " << double(e.duration_ns) * 1e-3 << ", \"args\": {\"flops\": " << e.flops
       << ", \"bytes\": " << e.bytes << "}}";
  }
  os << "\n]}\n";
  return os.str();
}

}  // namespace hmoe
