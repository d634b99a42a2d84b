// The dispatch registry: one DispatchStub per kernel holds a function pointer per
// device type; backends fill them once, on first use (ensure_backends_registered, with
// the device allocators). Each op family declares its kernels' signatures and stubs in
// a contract header (ops/<family>_kernels.h, ops/nn_kernels.h, ops/moe/moe_kernels.h)
// that names the backend files filling them.
#pragma once

#include <optional>
#include <utility>

#ifdef HMOE_WITH_CUDA_BACKEND
#include "engine/cuda/runtime.h"
#endif
#include "engine/device.h"
#include "engine/error.h"
#include "engine/profiler.h"
#include "engine/storage.h"
#include "engine/tensor.h"

namespace hmoe::ops {

// A stub's cost model: from a call's arguments, the call's work (FLOPs, fewest bytes).
// Evaluated only while a profiler is active, so kernels cost nothing extra otherwise.
template <typename Fn>
struct WorkFnOf;
template <typename R, typename... A>
struct WorkFnOf<R (*)(A...)> {
  using type = KernelWork (*)(A...);
};
template <typename Fn>
using WorkFn = typename WorkFnOf<Fn>::type;

// The bytes of the distinct elements a tensor view covers (a broadcast dim counts once);
// 0 for an undefined tensor. For cost models.
inline double distinct_bytes(const Tensor& t) {
  if (!t.defined()) return 0;
  double n = double(t.element_size());
  for (int64_t i = 0; i < t.dim(); ++i)
    if (t.stride(i) != 0) n *= double(t.size(i));
  return n;
}

// While a cuda kernel runs: its device is the calling thread's current one (kernels are
// launched on the current device, so tensors on cuda:1 from a thread at cuda:0 would
// fail to launch), restored after. cuda::DeviceGuard sets it only where it differs.
class KernelDeviceScope {
 public:
  explicit KernelDeviceScope(Device d) {
#ifdef HMOE_WITH_CUDA_BACKEND
    if (d.is_cuda()) guard_.emplace(d.index);
#else
    (void)d;
#endif
  }

 private:
#ifdef HMOE_WITH_CUDA_BACKEND
  std::optional<::hmoe::cuda::DeviceGuard> guard_;
#endif
};

// A kernel bound to its device: calling it runs the kernel on its device (the current
// device for a scope), inside a profiler scope (with the call's work where the stub has
// a cost model).
template <typename Fn>
struct BoundKernel {
  Fn fn;
  const char* name;
  Device device;
  WorkFn<Fn> work;
  template <typename... Args>
  decltype(auto) operator()(Args&&... args) const {
    const KernelDeviceScope on_device(device);
    ProfileScope scope(name, device);
    if (work && scope.active()) scope.set_work(work(args...));
    return fn(std::forward<Args>(args)...);
  }
};

// The name a stub's calls carry in the profiler and its traces: the kernel's, without
// the registry's "_stub" ("gemm" inside the "matmul" or "linear" event the op records,
// "attention_forward"); the elementwise stubs name each call by its op instead ("add",
// "gelu": get's op_name). Fills `out` at compile time (stubs are constant-initialised).
constexpr void stub_op_name(const char* stub, char (&out)[48]) {
  size_t n = 0;
  while (stub[n] != '\0') ++n;
  constexpr const char* kSuffix = "_stub";
  if (n >= 5) {
    bool suffix = true;
    for (size_t i = 0; i < 5; ++i) suffix = suffix && stub[n - 5 + i] == kSuffix[i];
    if (suffix) n -= 5;
  }
  if (n >= sizeof(out)) n = sizeof(out) - 1;
  for (size_t i = 0; i < n; ++i) out[i] = stub[i];
  out[n] = '\0';
}

template <typename Fn>
struct DispatchStub {
  constexpr explicit DispatchStub(const char* stub, WorkFn<Fn> w = nullptr) : name(stub), work(w) {
    stub_op_name(stub, op);
  }
  const char* name;  // the stub's, for errors about the kernel table
  WorkFn<Fn> work = nullptr;
  Fn table[kNumDeviceTypes] = {};
  char op[48] = {};  // the profiler's name for its calls (stub_op_name)

  // op_name: the profiler's name for this call where the stub serves several ops (the
  // elementwise stubs: "add", "gelu", ...); it must outlive the profiler (a literal).
  BoundKernel<Fn> get(Device d, const char* op_name = nullptr) const {
    ensure_backends_registered();
    Fn f = table[size_t(d.type)];
    HMOE_CHECK(f != nullptr, name, ": no kernel for device ", d.str(), " in this build");
    return {f, op_name ? op_name : op, d, work};
  }
  void set(DeviceType t, Fn f) { table[size_t(t)] = f; }
};

// All tensors of one op must live on one device; returns it.
Device common_device(const char* op, std::initializer_list<const Tensor*> ts);

// Backend registration entry points, called once by ensure_backends_registered (each
// backend room defines its own: ops/cpu/register.cpp, ops/cuda/register.cpp).
void register_cpu_kernels();
#ifdef HMOE_WITH_CUDA_BACKEND
void register_cuda_backend();
#endif

}  // namespace hmoe::ops

#define HMOE_DECLARE_STUB(fn_type, stub) extern ::hmoe::ops::DispatchStub<fn_type> stub
// clang-format off
#define HMOE_DEFINE_STUB(fn_type, stub) constinit ::hmoe::ops::DispatchStub<fn_type> stub{#stub}
// A stub with a cost model (a WorkFn<fn_type>), for the profiler's GFLOP/s and GB/s.
#define HMOE_DEFINE_STUB_WITH_WORK(fn_type, stub, work) constinit ::hmoe::ops::DispatchStub<fn_type> stub{#stub, work}
// clang-format on
