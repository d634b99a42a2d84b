/// @file
/// Device: where a tensor's storage lives (the CPU, or CUDA device N).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace hmoe {

/// The kind of device.
enum class DeviceType : uint8_t { cpu = 0, cuda = 1 };
/// The number of DeviceType values.
inline constexpr int kNumDeviceTypes = 2;

/// A device: the CPU, or CUDA device `index`.
struct Device {
  DeviceType type = DeviceType::cpu;  ///< the kind
  int index = 0;                      ///< the CUDA device's ordinal (0 for the CPU)

  /// The CPU.
  static constexpr Device cpu() { return {DeviceType::cpu, 0}; }
  /// CUDA device i.
  static constexpr Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  /// Whether this is the CPU.
  constexpr bool is_cpu() const { return type == DeviceType::cpu; }
  /// Whether this is a CUDA device.
  constexpr bool is_cuda() const { return type == DeviceType::cuda; }
  /// Same type and index.
  friend constexpr bool operator==(Device a, Device b) = default;
  /// "cpu" or "cuda:N".
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

/// Prints Device::str.
inline std::ostream& operator<<(std::ostream& os, Device d) { return os << d.str(); }

/// Parses "cpu", "cuda", "cuda:N"; throws hmoe::Error otherwise.
Device parse_device(const std::string& s);

}  // namespace hmoe
