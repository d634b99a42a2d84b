// libFuzzer target: the config parser must refuse any malformed or out-of-range config
// with hmoe::Error and never crash, hang or read out of bounds (run under ASan). The
// first byte picks the form: a TOML file, a JSON file, or the JSON a checkpoint stores.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/error.h"
#include "models/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace hmoe::train;
  try {
    switch (data[0] % 3) {
      case 0:
        load_config_text(text, ConfigFormat::toml, "fuzz.toml", {});
        break;
      case 1:
        load_config_text(text, ConfigFormat::json, "fuzz.json", {});
        break;
      default:
        parse_config_json(std::string(text));
        break;
    }
  } catch (const hmoe::Error&) {
  }
  return 0;
}
