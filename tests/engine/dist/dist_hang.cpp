// A job that goes wrong on purpose, for the fault tests (tests/engine/dist/expect_abort.sh):
//   --mode=skip   world rank 1 never joins an all_reduce the others wait in: their
//                 watchdog must end the job (exit 124) naming the collective and number.
//   --mode=throw  world rank 1 throws while the others wait in an all_reduce: its
//                 Environment, unwound, must end the job at once (exit 1).
//   --mode=async  (nccl, emulated, with HMOE_NCCL_EMU_FAIL_AFTER) the communicator
//                 reports an asynchronous error: the watchdog must abort and end the job.
// --backend=mpi|nccl, --timeout=S (the watchdog's, default 2). Device tensors for nccl.
// Exits 77 (skipped) where nccl lacks a GPU per rank (the real CUDA build).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "engine/dist/communicator.h"
#include "hmoe.h"
#include "tests/support/dist_skip.h"

namespace {

int run(const hmoe::dist::Options& options, const std::string& mode) {
  using namespace hmoe;
  dist::Environment env(options);
  dist::Communicator& w = env.world();
  const Device dev = w.backend() == dist::Backend::nccl ? Device::cuda(0) : Device::cpu();
  Tensor t = Tensor::empty({1024}, {DType::f32, dev});
  t.fill_(1);
  w.barrier();
  w.all_reduce(t);  // every rank joins
  const auto nap = std::chrono::duration<double>(10 * options.timeout_s + 5);
  if (mode == "async") {
    std::this_thread::sleep_for(nap);  // idle: the watchdog polls the communicator
    return 0;
  }
  if (w.rank() == 1) {
    if (mode == "throw") throw std::runtime_error("rank 1 fails on purpose");
    std::this_thread::sleep_for(nap);  // never joins the next one
    return 0;
  }
  w.all_reduce(t);
  std::printf("rank %d: the last all_reduce returned, but rank 1 never joined it\n", w.rank());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hmoe;
  dist::Options options;
  options.timeout_s = 2;
  std::string mode = "skip";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--backend=", 10) == 0) options.backend = dist::parse_backend(argv[i] + 10);
    if (std::strncmp(argv[i], "--timeout=", 10) == 0) options.timeout_s = std::atof(argv[i] + 10);
    if (std::strncmp(argv[i], "--mode=", 7) == 0) mode = argv[i] + 7;
  }
  if (hmoe::testing::dist::cannot_run(options.backend)) return 77;
  try {
    return run(options, mode);
  } catch (const std::exception& e) {
    // Reached after run()'s Environment was unwound (which ends the job in a world of
    // several ranks): what a trainer's main does.
    std::fprintf(stderr, "dist_hang: %s\n", e.what());
    return 1;
  }
}
