// JSON from untrusted files (safetensors headers, configs, training states): parsing with
// a nesting limit and duplicate keys refused, and short descriptions of values for error
// messages, so a hostile file can neither exhaust the stack nor flood the terminal.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace hmoe::io {

// Deeper than any file we write (a safetensors header nests 3 levels, a config 3).
inline constexpr int kMaxJsonDepth = 64;

// Parses text; throws hmoe::Error starting with `what` when it is not valid JSON, nests
// deeper than kMaxJsonDepth, or repeats a key within one object.
nlohmann::json parse_json(std::string_view text, const std::string& what);

// The value for an error message: scalars as JSON cut to `max_chars`, containers by kind
// and size ("an array of 3 values").
std::string json_brief(const nlohmann::json& v, size_t max_chars = 80);

}  // namespace hmoe::io
