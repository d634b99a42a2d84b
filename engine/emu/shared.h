// Block shared memory for host compilation: static arrays keyed by declaration site
// and the dynamic region, both carved from the running block's poisoned arena.
#pragma once

#include <cstddef>

namespace hmoe::emu {

// One HMOE_SHARED declaration. Constant-initialised, so its address identifies the
// declaration (one per template instantiation, like a __shared__ variable).
struct SharedSite {
  const char* name;
  const char* file;
  int line;
  size_t size;
  size_t align;
};

namespace detail {
// The block's storage for a site: allocated, poisoned and fenced by red zones the
// first time any thread of the block reaches the declaration.
void* shared_static(const SharedSite& site);
// The block's dynamic shared memory (the size given at launch).
void* shared_dynamic();
}  // namespace detail

// Bytes of dynamic shared memory the running block was launched with.
size_t dynamic_shared_size();

}  // namespace hmoe::emu

#define HMOE_EMU_SHARED_IMPL_(align_, type, name, dims)                                                    \
  static constexpr ::hmoe::emu::SharedSite hmoe_shared_site_##name{#name, __FILE__, __LINE__, sizeof(type dims), \
                                                                    (align_)};                            \
  using hmoe_shared_type_##name = type dims;                                                              \
  hmoe_shared_type_##name& name =                                                                         \
      *static_cast<hmoe_shared_type_##name*>(::hmoe::emu::detail::shared_static(hmoe_shared_site_##name))

#define HMOE_EMU_SHARED(type, name, dims) HMOE_EMU_SHARED_IMPL_(alignof(type), type, name, dims)
#define HMOE_EMU_SHARED_ALIGNED(align, type, name, dims) \
  HMOE_EMU_SHARED_IMPL_((align) > alignof(type) ? (align) : alignof(type), type, name, dims)
#define HMOE_EMU_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::hmoe::emu::detail::shared_dynamic())
