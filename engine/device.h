// Device: where a tensor's storage lives (the CPU, or CUDA device N).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace hmoe {

enum class DeviceType : uint8_t { cpu = 0, cuda = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::cpu, 0}; }
  static constexpr Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  constexpr bool is_cpu() const { return type == DeviceType::cpu; }
  constexpr bool is_cuda() const { return type == DeviceType::cuda; }
  friend constexpr bool operator==(Device a, Device b) = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

inline std::ostream& operator<<(std::ostream& os, Device d) { return os << d.str(); }

// Parses "cpu", "cuda", "cuda:N"; throws hmoe::Error otherwise.
Device parse_device(const std::string& s);

}  // namespace hmoe
