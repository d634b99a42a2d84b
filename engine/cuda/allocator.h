// The device memory behind Device::cuda(i): one CachingAllocator per device over the
// runtime's raw_malloc/raw_free, registered as the hmoe::Allocator of DeviceType::cuda.
#pragma once

#include <cstddef>

#include "engine/memory/caching_allocator.h"
#include "engine/storage.h"

namespace hmoe::cuda {

// The caching allocator of a device (created on first use; throws if it does not exist).
memory::CachingAllocator& caching_allocator(int device);

// When on, every block handed out is filled with 0xFF bytes (NaN for every float dtype,
// -1 for integers) so a kernel that leaves an output element unwritten is caught.
// Default: on in the emulated build, off in the real one; HMOE_CUDA_POISON=0|1 overrides.
bool poison_allocations();
void set_poison_allocations(bool on);

// The hmoe::Allocator of DeviceType::cuda, which the CUDA backend's registration
// (ops/cuda/register.cpp) hands to register_allocator on the first allocation, so
// Device::cuda tensors need no init call. Copies and memsets run on the current stream
// of the device involved and synchronize it.
Allocator& device_allocator();

// Emulated build only: each tensor block also carries guard bytes, checked when the
// block is freed; a damaged guard prints the tensor's size and aborts (frees run in
// destructors, which cannot throw). In the real build this is always 0.
size_t tensor_guard_bytes();

}  // namespace hmoe::cuda
