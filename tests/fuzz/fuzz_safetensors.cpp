// libFuzzer target: the safetensors parser (the model file: the whole file, and its
// metadata alone as eval and generate read it first) must reject any malformed input
// with hmoe::Error and never read out of bounds (run under ASan).
#include <cstddef>
#include <cstdint>

#include "engine/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    hmoe::io::parse_safetensors(data, size);
  } catch (const hmoe::Error&) {
  }
  try {
    hmoe::io::parse_safetensors_metadata(data, size);
  } catch (const hmoe::Error&) {
  }
  return 0;
}
