// Cached inference on the cuda device: a batch of prompts of different lengths prefilled
// and decoded there matches the CPU's whole-window recompute (logits at the fp32 bound,
// greedy tokens the same), dense, MoE and HyperMoE, under every emulator schedule.
#include <gtest/gtest.h>

#include "models/infer/session.h"
#include "tests/support/cuda_util.h"
#include "tests/support/infer_util.h"

namespace hmoe {
namespace {

using namespace testing;

void compare_decode(const std::string& ffn) {
  SCOPED_TRACE(ffn);
  auto ref = wide_lm(ffn), on_dev = wide_lm(ffn);
  on_dev->to(kDev);
  auto m = std::make_shared<const infer::Model>(std::move(on_dev));
  ASSERT_TRUE(m->device().is_cuda());
  std::vector<std::vector<int64_t>> seqs{{3, 17, 5}, {8}, {1, 2, 3, 4, 5, 6}};
  infer::Session s(m, int64_t(seqs.size()));
  Tensor logits = s.prefill(seqs);
  for (int step = 0; step < 5; ++step) {
    std::vector<int64_t> next;
    for (size_t b = 0; b < seqs.size(); ++b) {
      const std::vector<float> got = logits.select(0, int64_t(b)).contiguous().to_vector_as<float>();
      const std::vector<float> want = full_logits(*ref, seqs[b]);
      EXPECT_LT(rel_diff(got, want), 1e-5) << "row " << b << " step " << step;
      ASSERT_EQ(argmax(got), argmax(want)) << "row " << b << " step " << step;
      next.push_back(argmax(got));
      seqs[b].push_back(next.back());
    }
    logits = s.decode(next);
  }
}

TEST(CudaInference, CachedDecodeMatchesCpuRecompute) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (const char* ffn : {"dense", "moe", "hypermoe"}) compare_decode(ffn);
  });
}

}  // namespace
}  // namespace hmoe
