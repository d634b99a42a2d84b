// The dispatch registry: one DispatchStub per kernel family holds a function
// pointer per device type; backends fill them once, on first use.
#pragma once

#include <utility>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/profiler.h"
#include "engine/tensor.h"

namespace hmoe::ops {

void ensure_kernels_registered();

// A kernel bound to its device: calling it runs the kernel inside a profiler scope.
template <typename Fn>
struct BoundKernel {
  Fn fn;
  const char* name;
  Device device;
  template <typename... Args>
  decltype(auto) operator()(Args&&... args) const {
    ProfileScope scope(name, device);
    return fn(std::forward<Args>(args)...);
  }
};

template <typename Fn>
struct DispatchStub {
  const char* name;
  Fn table[kNumDeviceTypes] = {};

  BoundKernel<Fn> get(Device d) const {
    ensure_kernels_registered();
    Fn f = table[size_t(d.type)];
    HMOE_CHECK(f != nullptr, name, ": no kernel for device ", d.str(), " in this build");
    return {f, name, d};
  }
  void set(DeviceType t, Fn f) { table[size_t(t)] = f; }
};

// All tensors of one op must live on one device; returns it.
Device common_device(const char* op, std::initializer_list<const Tensor*> ts);

// Backend registration entry points (each backend room defines its own).
void register_cpu_kernels();
#ifdef HMOE_WITH_CUDA_BACKEND
void register_cuda_kernels();
#endif

}  // namespace hmoe::ops

#define HMOE_DECLARE_STUB(fn_type, stub) extern ::hmoe::ops::DispatchStub<fn_type> stub
#define HMOE_DEFINE_STUB(fn_type, stub) ::hmoe::ops::DispatchStub<fn_type> stub{#stub}
