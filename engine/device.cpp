// parse_device (engine/device.h).
#include "engine/device.h"

#include <string>

#include "engine/error.h"

namespace hmoe {

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    int idx = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      HMOE_CHECK(s[i] >= '0' && s[i] <= '9' && idx < 1000000, "bad device string '", s, "'");
      idx = idx * 10 + (s[i] - '0');
    }
    return Device::cuda(idx);
  }
  HMOE_FAIL("bad device string '", s, "': expected cpu, cuda or cuda:N");
}

}  // namespace hmoe
