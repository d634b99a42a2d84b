// The profiler sees every dispatched kernel while active, and nothing otherwise.
#include "engine/profiler.h"
#include "tests/test_util.h"

using namespace hmoe;

TEST(Profiler, RecordsDispatchesWhileActive) {
  Tensor a = ones({64, 64}), b = ones({64, 64});
  {
    Profiler p;
    Tensor c = exp(a + b);
    {
      ProfileScope s("custom", Device::cpu(), 1e6, 2e6);
    }
    ASSERT_GE(p.events().size(), 3u);
    bool saw_binary = false, saw_custom = false;
    for (const auto& e : p.events()) {
      saw_binary = saw_binary || std::string(e.name) == "binary_stub";
      saw_custom = saw_custom || (std::string(e.name) == "custom" && e.flops == 1e6);
    }
    EXPECT_TRUE(saw_binary);
    EXPECT_TRUE(saw_custom);
    EXPECT_NE(p.summary().find("unary_stub"), std::string::npos);
    EXPECT_NE(p.chrome_trace().find("\"traceEvents\""), std::string::npos);
  }
  EXPECT_EQ(Profiler::current(), nullptr);
  Tensor d = a * b;  // no profiler: nothing to record into, no crash
  EXPECT_EQ(d.numel(), 64 * 64);
}
