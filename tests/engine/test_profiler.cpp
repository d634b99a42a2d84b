// The profiler sees every dispatched kernel while active, and nothing otherwise.
#include <cstdlib>

#include "engine/profiler.h"
#if defined(HMOE_GPU_EMU)
#include "engine/emu/counters.h"
#endif
#include "ops/moe/grouped_gemm.h"
#include "tests/support/test_util.h"

using namespace hmoe;

TEST(Profiler, RecordsDispatchesWhileActive) {
  Tensor a = ones({64, 64}), b = ones({64, 64});
  {
    Profiler p;
    Tensor c = exp(a + b);
    { ProfileScope s("custom", Device::cpu(), 1e6, 2e6); }
    ASSERT_GE(p.events().size(), 3u);
    bool saw_binary = false, saw_custom = false;
    for (const auto& e : p.events()) {
      saw_binary = saw_binary || std::string(e.name) == "add";  // the op, not its kernel's stub
      saw_custom = saw_custom || (std::string(e.name) == "custom" && e.flops == 1e6);
    }
    EXPECT_TRUE(saw_binary);
    EXPECT_TRUE(saw_custom);
    EXPECT_NE(p.summary().find("exp"), std::string::npos);
    EXPECT_EQ(p.summary().find("_stub"), std::string::npos);
    EXPECT_EQ(p.chrome_trace().find("_stub"), std::string::npos);
    EXPECT_NE(p.chrome_trace().find("\"traceEvents\""), std::string::npos);
  }
  EXPECT_EQ(Profiler::current(), nullptr);
  Tensor d = a * b;  // no profiler: nothing to record into, no crash
  EXPECT_EQ(d.numel(), 64 * 64);
}

TEST(Profiler, ReportsPoolMemoryAndWhereItPeaked) {
  // 4 MiB blocks go through the CPU pool, whose use each event records at its end.
  if (const char* v = std::getenv("HMOE_CPU_CACHE"); v && std::string(v) == "0") GTEST_SKIP() << "HMOE_CPU_CACHE=0";
  const Tensor a = ones({1024, 1024});
  cpu_cache_reset_peak();
  Profiler p;
  const int64_t live_before = int64_t(cpu_cache_stats().allocated);
  Tensor big;
  {
    ProfileScope outer("make_temporaries", Device::cpu());
    Tensor tmp = a + a;        // a 4 MiB temporary, gone before the scope ends
    big = cat({tmp, tmp}, 0);  // 8 MiB, kept: the pool's peak (12 MiB above the start) is reached here
  }
  const ProfileEvent* cat_event = nullptr;
  const ProfileEvent* outer_event = nullptr;
  for (const auto& e : p.events()) {
    if (std::string(e.name) == "make_temporaries") outer_event = &e;
    if (e.raised_peak && !cat_event && e.mem_peak >= live_before + (12 << 20)) cat_event = &e;
  }
  ASSERT_NE(outer_event, nullptr);
  ASSERT_NE(cat_event, nullptr);
  EXPECT_GE(outer_event->mem_live, live_before + (8 << 20));  // the temporary already returned
  EXPECT_LT(outer_event->mem_live, live_before + (12 << 20));
  EXPECT_FALSE(outer_event->raised_peak);  // the op inside it took the peak
  // The summary names the op that reached the peak (the first kernel after cat's
  // allocation), not the scope around it.
  const std::string s = p.summary();
  EXPECT_NE(s.find("cpu pool peak"), std::string::npos) << s;
  EXPECT_NE(s.find(std::string("reached in ") + cat_event->name), std::string::npos) << s;
  EXPECT_EQ(s.find("reached in make_temporaries"), std::string::npos) << s;
  EXPECT_NE(p.chrome_trace().find("\"cpu pool MiB\""), std::string::npos);
}

TEST(Profiler, NamesBackwardNodes) {
  Tensor x = ones({8, 8}).set_requires_grad(true);
  Tensor y = sum(exp(x));
  Profiler p;
  y.backward();
  bool saw = false;
  for (const auto& e : p.events()) saw = saw || std::string(e.name).find(" backward") != std::string::npos;
  EXPECT_TRUE(saw);
  EXPECT_NE(p.summary().find(" backward (cpu)"), std::string::npos) << p.summary();
}

// Kernels with a cost model carry their work (FLOPs, fewest bytes); the ops around them
// carry none, so the total counts each kernel once.
TEST(Profiler, CountsKernelWork) {
  const Tensor a = ones({64, 128}), b = ones({128, 32});
  const Tensor x = ones({10, 16}), w = ones({3, 16, 8});
  const Tensor offsets = from_vector(std::vector<int64_t>{0, 4, 4, 12}, {4});
  const Tensor index = from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1}, {12});
  const Tensor row = ones({1, 32});
  Profiler p;
  const Tensor c = matmul(a, b);
  const Tensor y = moe::grouped_gemm(x, w, offsets, index);
  const Tensor s = c + row.expand({64, 32});  // the broadcast row is read once
  auto find = [&](const char* name) -> const ProfileEvent& {
    for (const auto& e : p.events())
      if (std::string(e.name) == name) return e;
    ADD_FAILURE() << "no event " << name;
    return p.events().front();
  };
  EXPECT_EQ(find("gemm").flops, 2.0 * 64 * 128 * 32);
  EXPECT_EQ(find("gemm").bytes, 4.0 * (64 * 128 + 128 * 32 + 64 * 32));
  EXPECT_EQ(find("matmul").flops, 0.0);
  // 12 gathered rows of a 10-row x: at least the 10 rows are read.
  EXPECT_EQ(find("grouped_gemm").flops, 2.0 * 12 * 16 * 8);
  EXPECT_EQ(find("grouped_gemm").bytes, 4.0 * (10 * 16 + 3 * 16 * 8 + 12 * 8) + 8.0 * 12);
  EXPECT_EQ(find("add").bytes, 4.0 * (64 * 32 + 32 + 64 * 32));
  // Causal attention at B 1, H 2, T 8, dh 4: the two forward products over the triangle,
  // 2.5 times that in the backward.
  const Tensor q = ones({1, 2, 8, 4}).set_requires_grad(true);
  sum(causal_attention(q, q, q)).backward();
  EXPECT_EQ(find("attention_forward").flops, 2.0 * 2 * 8 * 9 * 4);
  EXPECT_EQ(find("attention_backward").flops, 2.5 * 2.0 * 2 * 8 * 9 * 4);
  EXPECT_EQ(find("causal_attention").flops, 0.0);
  double flops = 0;
  for (const auto& e : p.events()) flops += e.flops;
  EXPECT_EQ(p.total_work().flops, flops);
  EXPECT_GE(flops, 2.0 * 64 * 128 * 32 + 2.0 * 12 * 16 * 8 + 64 * 32);
  EXPECT_NE(p.summary().find("work: "), std::string::npos) << p.summary();
}

// The emulator's access counters come only with a counters build; elsewhere asking for
// them is an error naming what to build (the counters' own tests: tests/engine/emu).
TEST(Profiler, EmuCountersNeedACountersBuild) {
#if defined(HMOE_GPU_EMU)
  if (emu::counters::available()) {
    {
      // A counters build: a kernel launched while the profiler lives is counted and its
      // report ends the summary (what `hmoe train --profile F --emu-counters` prints).
      Profiler p(ProfilerOptions{true});
      EXPECT_TRUE(emu::counters::enabled());
      const Tensor x = ones({256}, {DType::f32, Device::cuda(0)});
      const Tensor y = (x + x).to(Device::cpu());
      EXPECT_EQ(y.to_vector_as<float>()[255], 2.0f);
      const std::string s = p.summary();
      EXPECT_NE(s.find("emulator access counters"), std::string::npos) << s;
      EXPECT_NE(s.find("global loads"), std::string::npos) << s;
      EXPECT_NE(s.find("sectors/request"), std::string::npos) << s;
    }
    EXPECT_FALSE(emu::counters::enabled());
    return;
  }
  EXPECT_HMOE_ERROR(Profiler(ProfilerOptions{true}), "configure with -DCMAKE_CXX_COMPILER=clang++-16");
#else
  EXPECT_HMOE_ERROR(Profiler(ProfilerOptions{true}), "needs the emulated CUDA build");
#endif
  const Profiler plain;
  EXPECT_EQ(plain.summary().find("access counters"), std::string::npos);
}
