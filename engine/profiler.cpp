// Profiler sessions (thread-local activation), scopes, and their reports.
#include "engine/profiler.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "engine/error.h"
#include "engine/storage.h"
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
#include "engine/cuda/runtime.h"
#endif
#if defined(HMOE_GPU_EMU)
#include "engine/emu/counters.h"
#endif

namespace hmoe {
namespace {
thread_local Profiler* t_profiler = nullptr;
}

Profiler::Profiler(const ProfilerOptions& options)
    : outer_(t_profiler), options_(options), origin_(std::chrono::steady_clock::now()) {
  if (options_.emu_counters) {
#if defined(HMOE_GPU_EMU)
    namespace cnt = emu::counters;
    HMOE_CHECK(cnt::available(), "Profiler: emu_counters needs the emulator's access counters; configure with "
                                 "-DCMAKE_CXX_COMPILER=clang++-16 -DHMOE_GPU=emu -DHMOE_EMU_COUNTERS=ON");
    cnt::reset();
    cnt::set_enabled(true);
#else
    HMOE_FAIL("Profiler: emu_counters needs the emulated CUDA build (HMOE_GPU=emu with HMOE_EMU_COUNTERS=ON)");
#endif
  }
  t_profiler = this;
}

Profiler::~Profiler() {
  t_profiler = outer_;
#if defined(HMOE_GPU_EMU)
  if (options_.emu_counters) emu::counters::set_enabled(false);
#endif
}
Profiler* Profiler::current() { return t_profiler; }

namespace {
memory::AllocatorStats pool_stats(Device d) { return allocator_for(d.type).memory_stats(d.index); }
}  // namespace

ProfileScope::ProfileScope(const char* name, Device device, double flops, double bytes)
    : prof_(t_profiler), name_(name), device_(device), flops_(flops), bytes_(bytes) {
  if (prof_) {
    ++prof_->depth;
    if (!prof_->has_seen(device)) {  // the pool's peak, from here on, is this profile's
      allocator_for(device.type).reset_peak_stats(device.index);
      prof_->seen_peak(device) = int64_t(pool_stats(device).peak_allocated);
    }
    start_ = std::chrono::steady_clock::now();
  }
}

ProfileScope::ProfileScope(const std::string& name, Device device)
    : ProfileScope(t_profiler ? t_profiler->intern(name) : "", device) {}

ProfileScope::~ProfileScope() {
  if (!prof_) return;
  const auto end = std::chrono::steady_clock::now();
  --prof_->depth;
  const memory::AllocatorStats mem = pool_stats(device_);
  ProfileEvent e{name_,
                 device_,
                 std::chrono::duration_cast<std::chrono::nanoseconds>(start_ - prof_->origin_).count(),
                 std::chrono::duration_cast<std::chrono::nanoseconds>(end - start_).count(),
                 flops_,
                 bytes_,
                 prof_->depth};
  e.mem_live = int64_t(mem.allocated);
  e.mem_peak = int64_t(mem.peak_allocated);
  int64_t& seen = prof_->seen_peak(device_);
  e.raised_peak = e.mem_peak > seen;
  seen = std::max(seen, e.mem_peak);
  prof_->record(e);
}

std::string Profiler::summary() const {
  struct Agg {
    int64_t calls = 0, ns = 0, mem_live = 0;
    double flops = 0, bytes = 0;
  };
  std::map<std::string, Agg> by_op;
  for (const ProfileEvent& e : events_) {
    Agg& a = by_op[std::string(e.name) + " (" + e.device.str() + ")"];
    ++a.calls;
    a.ns += e.duration_ns;
    a.flops += e.flops;
    a.bytes += e.bytes;
    a.mem_live = std::max(a.mem_live, e.mem_live);
  }
  std::vector<std::pair<std::string, Agg>> rows(by_op.begin(), by_op.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "%-44s %8s %12s %10s %10s %10s %9s\n", "op", "calls", "total ms", "mean us",
                "GFLOP/s", "GB/s", "live MiB");
  os << line;
  constexpr double kMiB = 1.0 / (1 << 20);
  for (const auto& [name, a] : rows) {
    const double s = double(a.ns) * 1e-9;
    std::snprintf(line, sizeof line, "%-44s %8lld %12.3f %10.1f %10.2f %10.2f %9.1f\n", name.c_str(),
                  static_cast<long long>(a.calls), s * 1e3, s * 1e6 / double(a.calls),
                  a.flops > 0 ? a.flops / s * 1e-9 : 0.0, a.bytes > 0 ? a.bytes / s * 1e-9 : 0.0,
                  double(a.mem_live) * kMiB);
    os << line;
  }
  const KernelWork w = total_work();
  const double top_s = top_level_seconds();
  if (w.flops > 0 || w.bytes > 0) {
    std::snprintf(line, sizeof line,
                  "work: %.3f GFLOP, %.3f GB in %.3f ms of outermost events (%.2f GFLOP/s, %.2f GB/s)\n",
                  w.flops * 1e-9, w.bytes * 1e-9, top_s * 1e3, top_s > 0 ? w.flops / top_s * 1e-9 : 0.0,
                  top_s > 0 ? w.bytes / top_s * 1e-9 : 0.0);
    os << line;
  }
  // Per device: the pool's highest peak seen, and the op that reached it.
  std::map<std::string, const ProfileEvent*> peak_at;
  for (const ProfileEvent& e : events_) {
    const ProfileEvent*& p = peak_at[e.device.str()];
    if (e.raised_peak && (!p || e.mem_peak > p->mem_peak)) p = &e;
  }
  for (const auto& [dev, e] : peak_at) {
    if (!e) continue;
    // The scopes around it: events end in order, so a parent is the next one to end
    // with a smaller depth.
    std::string where = e->name;
    int depth = e->depth;
    for (size_t i = size_t(e - events_.data()) + 1; i < events_.size() && depth > 0; ++i) {
      if (events_[i].depth >= depth) continue;
      where += std::string(" < ") + events_[i].name;
      depth = events_[i].depth;
    }
    os << dev << " pool peak " << double(e->mem_peak) * kMiB << " MiB, reached in " << where << "\n";
  }
#if defined(HMOE_GPU_EMU)
  if (options_.emu_counters)
    os << "\nemulator access counters of the kernels launched while profiling:\n"
       << emu::counters::report(emu::counters::snapshot(true));
#endif
  return os.str();
}

KernelWork Profiler::total_work() const {
  KernelWork w;
  for (const ProfileEvent& e : events_) {
    w.flops += e.flops;
    w.bytes += e.bytes;
  }
  return w;
}

double Profiler::top_level_seconds() const {
  int64_t ns = 0;
  for (const ProfileEvent& e : events_)
    if (e.depth == 0) ns += e.duration_ns;
  return double(ns) * 1e-9;
}

std::string Profiler::chrome_trace() const {
  std::ostringstream os;
  os << "{\"traceEvents\": [";
  for (size_t i = 0; i < events_.size(); ++i) {
    const ProfileEvent& e = events_[i];
    os << (i ? ",\n" : "\n") << "{\"name\": \"" << e.name << "\", \"cat\": \"" << e.device.str()
       << "\", \"ph\": \"X\", \"pid\": 0, \"tid\": 0, \"ts\": " << double(e.start_ns) * 1e-3
       << ", \"dur\": " << double(e.duration_ns) * 1e-3 << ", \"args\": {\"flops\": " << e.flops
       << ", \"bytes\": " << e.bytes << ", \"live_bytes\": " << e.mem_live << "}}";
    // The pool's use as a counter track beside the ops (Perfetto draws it as a graph).
    os << ",\n{\"name\": \"" << e.device.str()
       << " pool MiB\", \"ph\": \"C\", \"pid\": 0, \"ts\": " << double(e.start_ns + e.duration_ns) * 1e-3
       << ", \"args\": {\"MiB\": " << double(e.mem_live) / (1 << 20) << "}}";
  }
  os << "\n]";
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
  // Metadata: what each cuda device of the trace is (an emulated build's says so).
  std::set<int> cuda_devices;
  for (const ProfileEvent& e : events_)
    if (e.device.is_cuda()) cuda_devices.insert(e.device.index);
  os << ", \"otherData\": {";
  for (int d : cuda_devices)
    os << (d == *cuda_devices.begin() ? "" : ", ") << "\"" << Device::cuda(d).str() << "\": \""
       << cuda::properties(d).name << "\"";
  os << "}";
#endif
  os << "}\n";
  return os.str();
}

}  // namespace hmoe
