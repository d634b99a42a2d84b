// Bounded JSON parsing and brief descriptions of values for error messages.
#include "engine/io/json.h"

#include <set>
#include <vector>

#include "engine/error.h"

namespace hmoe::io {

using nlohmann::json;

nlohmann::json parse_json(std::string_view text, const std::string& what) {
  // The keys seen so far in each open object, innermost last (for duplicate keys: the
  // parser itself keeps the last value silently).
  std::vector<std::set<std::string>> keys;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) HMOE_FAIL(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels");
    switch (event) {
      case json::parse_event_t::object_start: keys.emplace_back(); break;
      case json::parse_event_t::object_end: keys.pop_back(); break;
      case json::parse_event_t::key:
        if (!keys.back().insert(parsed.get<std::string>()).second)
          HMOE_FAIL(what, ": the key ", json_brief(parsed, 60), " appears twice in one object");
        break;
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    HMOE_FAIL(what, ": not valid JSON: ", e.what());
  }
}

std::string json_brief(const json& v, size_t max_chars) {
  if (v.is_array()) return "an array of " + std::to_string(v.size()) + " values";
  if (v.is_object()) return "an object of " + std::to_string(v.size()) + " keys";
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

}  // namespace hmoe::io
