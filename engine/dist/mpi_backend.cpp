// The MPI backend: collectives through mpi_util's piecewise helpers; all_to_all_v as
// non-blocking point-to-point messages per (peer, chunk) block in a row datatype, so
// any layout, zero blocks and counts past 2^31 need no extra copy or collective.
#include "engine/dist/mpi_backend.h"

#include "engine/dist/backend.h"
#include "engine/error.h"
#if defined(HMOE_WITH_CUDA_BACKEND)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::dist {

MpiCommunicator::MpiCommunicator(Backend backend, std::shared_ptr<mpi::Runtime> runtime, MPI_Comm comm,
                                 std::string name, const Options& options, bool watch)
    : Communicator(backend, mpi::rank_of(comm), mpi::size_of(comm), mpi::rank_of(MPI_COMM_WORLD), std::move(name),
                   options),
      runtime_(std::move(runtime)),
      comm_{comm, mpi::max_count_from_env(), &ops_} {
  mpi::check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  if (watch) start_watchdog(mpi_actions());
}

MpiCommunicator::~MpiCommunicator() {
  stop_watchdog();
  MPI_Comm_free(&comm_.comm);
}

WatchdogActions MpiCommunicator::mpi_actions() {
  return WatchdogActions{{}, {}, [](int code) { mpi::abort_job(code); }};
}

void* MpiCommunicator::host_data(const Tensor& t) const {
  if (t.device().is_cuda()) {
#if defined(HMOE_WITH_CUDA_BACKEND)
    HMOE_CHECK(cuda::is_emulated(), "the mpi backend takes CPU tensors (and emulated-device ones), not ", t.meta_str(),
               ": use the nccl backend for GPU tensors");
#endif
    detail::sync_stream(t.device());
  }
  return t.data_ptr<void>();
}

MPI_Datatype MpiCommunicator::row_type(size_t row_bytes) {
  for (auto& [bytes, type] : row_types_)
    if (bytes == row_bytes) return type.get();
  if (row_types_.size() == 8) row_types_.erase(row_types_.begin());  // a few row sizes are in use at once
  row_types_.emplace_back(row_bytes, mpi::Datatype::bytes(row_bytes, comm_.max_count));
  return row_types_.back().second.get();
}

MPI_Comm MpiCommunicator::split_mpi(int color, int key) {
  MPI_Comm out = MPI_COMM_NULL;
  mpi::check(MPI_Comm_split(comm_.comm, color < 0 ? MPI_UNDEFINED : color, key, &out), "MPI_Comm_split");
  return out;
}

std::shared_ptr<Communicator> MpiCommunicator::split_impl(int color, int key, const std::string& name) {
  const MPI_Comm sub = split_mpi(color, key);
  if (sub == MPI_COMM_NULL) return nullptr;
  return std::make_shared<MpiCommunicator>(Backend::mpi, runtime_, sub, name, options(), true);
}

void MpiCommunicator::all_reduce_impl(const Tensor& t, ReduceOp op) {
  mpi::all_reduce(comm_, host_data(t), t.numel(), t.dtype(), op);
}

void MpiCommunicator::all_gather_impl(const Tensor& in, const Tensor& out) {
  // Rows of the input's elements; one row per rank when the input is 0-d.
  const int64_t rows = in.dim() == 0 ? 1 : in.size(0);
  const size_t row_bytes = in.nbytes() / size_t(rows);
  mpi::all_gather(comm_, host_data(in), host_data(out), rows, row_type(row_bytes), row_bytes);
}

void MpiCommunicator::all_to_all_v_impl(const AllToAllPlan& plan) {
  post_exchange(plan);
  exchange_.wait();
}

std::function<void()> MpiCommunicator::all_to_all_v_start_impl(const AllToAllPlan& plan) {
  post_exchange(plan);
  return [this] { exchange_.wait(); };
}

void MpiCommunicator::post_exchange(const AllToAllPlan& plan) {
  const char* send = static_cast<const char*>(host_data(plan.send));
  char* recv = static_cast<char*>(host_data(plan.recv));
  const MPI_Datatype row = row_type(plan.row_bytes);
  mpi::Exchange& x = exchange_;
  // Peers in a staggered order (rank + s, rank - s), so that not every rank's first
  // message goes to rank 0. Zero blocks are skipped on both sides alike.
  for (int s = 1; s < size(); ++s) {
    const int from = (rank() - s + size()) % size();
    for (int c = 0; c < plan.chunks; ++c) {
      const size_t i = size_t(from) * size_t(plan.chunks) + size_t(c);
      if (plan.recv_rows[i] > 0)
        x.recv(recv + size_t(plan.recv_offsets[i]) * plan.row_bytes, plan.recv_rows[i], row, plan.row_bytes, from);
    }
  }
  for (int s = 1; s < size(); ++s) {
    const int to = (rank() + s) % size();
    for (int c = 0; c < plan.chunks; ++c) {
      const size_t i = size_t(to) * size_t(plan.chunks) + size_t(c);
      if (plan.send_rows[i] > 0)
        x.send(send + size_t(plan.send_offsets[i]) * plan.row_bytes, plan.send_rows[i], row, plan.row_bytes, to);
    }
  }
  copy_own_blocks(plan, rank());
}

void MpiCommunicator::broadcast_impl(const Tensor& t, int root) {
  mpi::broadcast(comm_, host_data(t), t.nbytes(), root);
}

void MpiCommunicator::barrier_impl() { mpi::barrier(comm_); }

namespace detail {

std::shared_ptr<Communicator> make_mpi_world(const Options& options) {
  auto runtime = std::make_shared<mpi::Runtime>();
  MPI_Comm world = MPI_COMM_NULL;
  mpi::check(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup");
  return std::make_shared<MpiCommunicator>(Backend::mpi, std::move(runtime), world, "world", options, true);
}

void mpi_abort(int code) { mpi::abort_job(code); }

}  // namespace detail
}  // namespace hmoe::dist
