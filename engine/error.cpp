// Out-of-line thrower for HMOE_CHECK, so the check's fast path stays small.
#include "engine/error.h"

namespace hmoe::detail {

void throw_error(const char* /*file*/, int /*line*/, const std::string& msg) { throw Error(msg); }

}  // namespace hmoe::detail
