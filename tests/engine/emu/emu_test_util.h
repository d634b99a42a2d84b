// Helpers for the emulator tests: the schedules every kernel test runs under,
// 256-byte aligned device-like buffers, and an expect-error check.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/cuda/device_code.h"
#include "engine/error.h"

namespace hmoe::emu {
// Readable test names and failure messages for parameterised tests.
inline void PrintTo(const Schedule& s, std::ostream* os) { *os << to_string(s); }
}  // namespace hmoe::emu

namespace hmoe::emu::testing {

inline std::vector<Schedule> all_schedules() {
  return {Schedule{ScheduleMode::in_order, 0}, Schedule{ScheduleMode::reverse, 0},
          Schedule{ScheduleMode::interleave, 0}, Schedule{ScheduleMode::random, 1}, Schedule{ScheduleMode::random, 77}};
}

inline std::string schedule_name(const ::testing::TestParamInfo<Schedule>& info) {
  return std::string(to_string(info.param.mode)) + "_" + std::to_string(info.param.seed);
}

// A fixture that makes its schedule the default for every launch in the test.
class Scheduled : public ::testing::TestWithParam<Schedule> {
 protected:
  ScopedSchedule scope_{GetParam()};
};

// Host memory standing in for device memory: 256-byte aligned like cudaMalloc.
template <typename T>
class Buffer {
 public:
  explicit Buffer(size_t n, T fill = T{}) : n_(n), p_(static_cast<T*>(std::aligned_alloc(256, round(n)))) {
    for (size_t i = 0; i < n; ++i) p_.get()[i] = fill;
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  T& operator[](size_t i) { return p_.get()[i]; }
  const T& operator[](size_t i) const { return p_.get()[i]; }
  size_t size() const { return n_; }
  std::span<T> span() { return {p_.get(), n_}; }

 private:
  static size_t round(size_t n) { return (n * sizeof(T) + 255) / 256 * 256 + 256; }
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  size_t n_;
  std::unique_ptr<T, Free> p_;
};

// Runs fn, expecting hmoe::Error whose message contains every fragment; returns it.
inline std::string expect_error(const std::function<void()>& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
  } catch (const hmoe::Error& e) {
    const std::string msg = e.what();
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in:\n" << msg;
    return msg;
  }
  ADD_FAILURE() << "expected hmoe::Error";
  return {};
}

}  // namespace hmoe::emu::testing
