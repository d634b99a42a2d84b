/// @file
/// hmoe::Error, the one exception type for bad input, and the HMOE_CHECK macro
/// that builds its message from streamable parts.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace hmoe {

/// The exception every bad input raises: the message names the op, the shapes and dtypes
/// involved and what was wrong. Derives from std::runtime_error.
class Error : public std::runtime_error {
 public:
  /// An error with the message `what`.
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace hmoe

/// HMOE_CHECK(cond, "op: ", shape, " must ...") throws hmoe::Error with the message.
#define HMOE_CHECK(cond, ...)                                                           \
  do {                                                                                  \
    if (!(cond)) [[unlikely]]                                                           \
      ::hmoe::detail::throw_error(__FILE__, __LINE__, ::hmoe::detail::concat(__VA_ARGS__)); \
  } while (0)

/// HMOE_FAIL("op: ", ...) throws hmoe::Error with the message, unconditionally.
#define HMOE_FAIL(...) ::hmoe::detail::throw_error(__FILE__, __LINE__, ::hmoe::detail::concat(__VA_ARGS__))
