// Choices measured on a device: which of several implementations of one computation
// ran fastest there, per key (the computation and its shape class), kept per device for
// the life of the process, as the device's caching allocator keeps its blocks.
#pragma once

#include <optional>
#include <string>

namespace hmoe::cuda {

// The choice recorded for key on the device, if any. Thread-safe.
std::optional<int> measured_choice(int device, const std::string& key);
// Records choice for key on the device and returns the one that stands: the first
// recorded (two threads that measured the same key at once agree from then on).
int record_choice(int device, const std::string& key, int choice);

}  // namespace hmoe::cuda
