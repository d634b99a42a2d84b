// HMOE_EMU_CHECK / HMOE_EMU_FAIL: throw hmoe::Error without needing hmoe_static, so the
// emulator library stands alone under the tensor library.
#pragma once

#include "engine/error.h"

#define HMOE_EMU_CHECK(cond, ...)                                        \
  do {                                                                   \
    if (!(cond)) [[unlikely]]                                            \
      throw ::hmoe::Error(::hmoe::detail::concat(__VA_ARGS__));          \
  } while (0)
#define HMOE_EMU_FAIL(...) throw ::hmoe::Error(::hmoe::detail::concat(__VA_ARGS__))
