// The backend factory (Environment: which backend, MPI's lifetime, the world), backend
// names, and the single-process backend (world size 1: collectives are copies or
// nothing).
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "engine/dist/backend.h"
#include "engine/dist/communicator.h"
#if defined(HMOE_WITH_CUDA_BACKEND)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::dist {
namespace {

class SingleCommunicator final : public Communicator {
 public:
  SingleCommunicator(std::string name, const Options& options)
      : Communicator(Backend::single, 0, 1, 0, std::move(name), options) {}

 protected:
  std::shared_ptr<Communicator> split_impl(int color, int, const std::string& name) override {
    return color < 0 ? nullptr : std::make_shared<SingleCommunicator>(name, options());
  }
  void all_reduce_impl(const Tensor&, ReduceOp) override {}
  void all_gather_impl(const Tensor& in, const Tensor& out) override {
    detail::copy_bytes(out.data_ptr<void>(), in.data_ptr<void>(), in.nbytes(), in.device());
  }
  void all_to_all_v_impl(const AllToAllPlan& plan) override { copy_own_blocks(plan, 0); }
  void broadcast_impl(const Tensor&, int) override {}
  void barrier_impl() override {}
};

// The number of processes the MPI launcher started (0 when none did).
int launcher_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(var); v && *v) return std::atoi(v);
  return launched_by_mpi() ? 1 : 0;
}

Backend resolve(Backend b) {
  if (b != Backend::automatic) return b;
  if (!launched_by_mpi()) return Backend::single;
#if defined(HMOE_WITH_CUDA_BACKEND)
  if (backend_built(Backend::nccl) && !cuda::is_emulated() && cuda::device_available()) return Backend::nccl;
#endif
  if (backend_built(Backend::mpi)) return Backend::mpi;
  HMOE_CHECK(launcher_size() <= 1, "dist: this process was started by an MPI launcher with ", launcher_size(),
             " processes, but this build has no MPI (HMOE_DIST=off): each would train alone. Rebuild with "
             "-DHMOE_DIST=mpi (needs libopenmpi-dev), or run without mpirun");
  return Backend::single;
}

}  // namespace

std::string_view backend_name(Backend b) {
  switch (b) {
    case Backend::automatic:
      return "auto";
    case Backend::single:
      return "single";
    case Backend::mpi:
      return "mpi";
    case Backend::nccl:
      return "nccl";
  }
  return "?";
}

Backend parse_backend(std::string_view s) {
  for (Backend b : {Backend::automatic, Backend::single, Backend::mpi, Backend::nccl})
    if (s == backend_name(b)) return b;
  HMOE_FAIL("dist: unknown backend '", s, "' (choices: auto, single, mpi, nccl)");
}

bool backend_built(Backend b) {
  switch (b) {
    case Backend::automatic:
    case Backend::single:
      return true;
    case Backend::mpi:
#if defined(HMOE_WITH_MPI)
      return true;
#else
      return false;
#endif
    case Backend::nccl:
#if defined(HMOE_WITH_NCCL)
      return true;
#else
      return false;
#endif
  }
  return false;
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"})
    if (const char* v = std::getenv(var); v && *v) return true;
  return false;
}

namespace detail {
std::shared_ptr<Communicator> make_single_world(const Options& options) {
  return std::make_shared<SingleCommunicator>("world", options);
}
}  // namespace detail

Environment::Environment(const Options& options) : uncaught_at_start_(std::uncaught_exceptions()) {
  HMOE_CHECK(options.timeout_s >= 0, "dist: Options::timeout_s must be >= 0 (got ", options.timeout_s, ")");
  const Backend b = resolve(options.backend);
  HMOE_CHECK(
      backend_built(b), "dist: the ", backend_name(b), " backend is not built into this binary (",
      b == Backend::mpi ? "configure with -DHMOE_DIST=mpi" : "it needs MPI and -DHMOE_GPU=cuda with NCCL, or emu", ")");
  switch (b) {
    case Backend::mpi:
#if defined(HMOE_WITH_MPI)
      world_ = detail::make_mpi_world(options);
#endif
      break;
    case Backend::nccl:
#if defined(HMOE_WITH_NCCL)
      world_ = detail::make_nccl_world(options);
#endif
      break;
    default:
      world_ = detail::make_single_world(options);
  }
}

Environment::~Environment() {
  if (std::uncaught_exceptions() > uncaught_at_start_ && world_->size() > 1) {
    std::fprintf(stderr,
                 "hmoe dist: world rank %d is leaving with an exception in flight; ending the job so that no rank "
                 "waits for it\n",
                 world_->world_rank());
    std::fflush(stderr);
#if defined(HMOE_WITH_MPI)
    detail::mpi_abort(1);
#endif
  }
  world_.reset();
}

void Environment::abort(const std::string& why, int code) const {
  std::fprintf(stderr, "hmoe dist: world rank %d: %s\n", world_->world_rank(), why.c_str());
  std::fflush(stderr);
#if defined(HMOE_WITH_MPI)
  if (world_->backend() != Backend::single) detail::mpi_abort(code);
#endif
  std::_Exit(code);
}

}  // namespace hmoe::dist
