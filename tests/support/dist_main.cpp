// The main of the test programs that run under mpirun (test_dist, test_ep): makes the
// world (--backend=single|mpi|nccl|auto, Options::verify on, a 60 s watchdog), runs the
// tests, and makes every rank return the worst rank's result. Exits 77 (skipped) where
// the backend cannot run: the real CUDA build without a GPU per rank, or a backend this
// binary lacks.
#include <cstdio>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "hmoe.h"
#include "tests/support/dist_skip.h"
#include "tests/support/dist_world.h"

namespace hmoe::testing::dist {
namespace {
std::shared_ptr<hmoe::dist::Communicator> g_world;
}
hmoe::dist::Communicator& world() { return *g_world; }
std::shared_ptr<hmoe::dist::Communicator> world_ptr() { return g_world; }
}  // namespace hmoe::testing::dist

int main(int argc, char** argv) {
  using namespace hmoe;
  ::testing::InitGoogleTest(&argc, argv);
  dist::Options options;
  options.verify = true;
  options.timeout_s = 60;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--backend=", 10) == 0) options.backend = dist::parse_backend(argv[i] + 10);
  if (hmoe::testing::dist::cannot_run(options.backend)) {
    std::printf("%s: the %s backend cannot run here (not built, or no GPU per rank): skipped\n",
                argv[0], std::string(dist::backend_name(options.backend)).c_str());
    return 77;
  }
  dist::Environment env(options);
  hmoe::testing::dist::g_world = env.world_ptr();
  int rc = RUN_ALL_TESTS();
  Tensor worst = from_vector(std::vector<int64_t>{rc}, {1});
  env.world().all_reduce(worst, dist::ReduceOp::max);
  rc = int(worst.item<int64_t>());
  hmoe::testing::dist::g_world.reset();
  return rc;
}
