// The per-device record of measured choices (engine/cuda/tuning.h).
#include "engine/cuda/tuning.h"

#include <array>
#include <map>
#include <mutex>

#include "engine/cuda/runtime.h"
#include "engine/cuda/runtime_backend.h"

namespace hmoe::cuda {
namespace {

struct Choices {
  std::mutex mu;
  std::map<std::string, int> by_key;
};

// One per device, like its allocator and default stream: state of the device, created
// with the program, holding only plain values.
Choices& choices_of(int device) {
  check_device(device);
  static std::array<Choices, backend::kMaxDevices> per_device;
  return per_device[size_t(device)];
}

}  // namespace

std::optional<int> measured_choice(int device, const std::string& key) {
  Choices& c = choices_of(device);
  const std::lock_guard<std::mutex> lock(c.mu);
  const auto it = c.by_key.find(key);
  if (it == c.by_key.end()) return std::nullopt;
  return it->second;
}

int record_choice(int device, const std::string& key, int choice) {
  Choices& c = choices_of(device);
  const std::lock_guard<std::mutex> lock(c.mu);
  return c.by_key.emplace(key, choice).first->second;
}

}  // namespace hmoe::cuda
