// Lazy, once-only registration of every backend built in (engine/storage.h declares
// it), and the device check.
#include "ops/dispatch.h"

namespace hmoe {

void ensure_backends_registered() {
  static const bool once = [] {
    ops::register_cpu_kernels();
#ifdef HMOE_WITH_CUDA_BACKEND
    ops::register_cuda_backend();
#endif
    return true;
  }();
  (void)once;
}

}  // namespace hmoe

namespace hmoe::ops {

Device common_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    HMOE_CHECK(t->device() == first->device(), op, ": tensors are on different devices (", first->meta_str(), " on ",
               first->device().str(), ", ", t->meta_str(), " on ", t->device().str(), ")");
  }
  HMOE_CHECK(first != nullptr, op, ": no defined input tensor");
  return first->device();
}

}  // namespace hmoe::ops
