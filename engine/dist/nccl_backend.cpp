// The NCCL backend: device tensors through NCCL on the calling thread's current stream
// of the communicator's device, asynchronously (all-to-all-v as grouped ncclSend /
// ncclRecv per block; a started one on a communication stream of its own); CPU tensors
// and barrier through its MPI side; the world made from a unique id broadcast over MPI,
// sub-groups by ncclCommSplit; a watchdog that polls ncclCommGetAsyncError and aborts
// the communicator, then the job, on an error or a timeout. The same lines build
// against <nccl.h> and the emulated NCCL.
#include <atomic>
#include <functional>
#include <memory>

#include "engine/cuda/runtime.h"
#include "engine/dist/backend.h"
#include "engine/dist/mpi_backend.h"
#include "engine/dist/nccl_api.h"
#include "engine/error.h"

namespace hmoe::dist {
namespace {

void check_nccl(ncclResult_t r, const char* call) {
  if (r == ncclSuccess) return;
  const char* last = ncclGetLastError(nullptr);
  HMOE_FAIL(call, " failed: ", ncclGetErrorString(r), last && *last ? std::string(" (") + last + ")" : std::string());
}

ncclDataType_t nccl_type(DType dt) {
  switch (dt) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::b8:
      return ncclUint8;
  }
  HMOE_FAIL("no NCCL type for dtype ", dtype_name(dt));
}

// This process's rank among the processes of its node, and their number.
struct NodePlace {
  int rank, size;
};
NodePlace node_place(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  mpi::check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  const NodePlace place{mpi::rank_of(node), mpi::size_of(node)};
  MPI_Comm_free(&node);
  return place;
}

// ncclGroupStart ... ncclGroupEnd; ends the group on the way out of an exception too.
class Group {
 public:
  Group() { check_nccl(ncclGroupStart(), "ncclGroupStart"); }
  ~Group() {
    if (open_) ncclGroupEnd();
  }
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;
  void end() {
    open_ = false;
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
  }

 private:
  bool open_ = true;
};

class NcclCommunicator final : public MpiCommunicator {
 public:
  // Takes ownership of host (MPI) and comm (null until init_world()).
  NcclCommunicator(std::shared_ptr<mpi::Runtime> runtime, MPI_Comm host, int device, std::string name,
                   const Options& options, ncclComm_t comm)
      : MpiCommunicator(Backend::nccl, std::move(runtime), host, std::move(name), options, false),
        device_(device),
        comm_(comm) {
    WatchdogActions actions = mpi_actions();
    actions.poll = [this] { return async_error(); };
    actions.abort_backend = [this] {
      if (ncclComm_t c = comm_.exchange(nullptr)) ncclCommAbort(c);
    };
    start_watchdog(std::move(actions));
  }

  int device() const override { return device_; }

  ~NcclCommunicator() override {
    stop_watchdog();
    ncclComm_t c = comm_.exchange(nullptr);
    if (!c) return;
    // A communicator with an error is aborted: destroying it would wait for work that
    // never completes.
    ncclResult_t error = ncclSuccess;
    ncclCommGetAsyncError(c, &error);
    try {
      const cuda::DeviceGuard guard(device_);
      if (error == ncclSuccess)
        ncclCommDestroy(c);
      else
        ncclCommAbort(c);
    } catch (const std::exception&) {
      ncclCommAbort(c);
    }
  }

  // The world's NCCL communicator: rank 0's unique id broadcast over MPI, then
  // ncclCommInitRank on this rank's device (call "init", watched like a collective).
  void init_world() {
    call("init", Device::cuda(device_), 0, [&] {
      ncclUniqueId id{};
      if (rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
      mpi::broadcast(host(), &id, sizeof(id), 0);
      ncclComm_t c = nullptr;
      const cuda::DeviceGuard guard(device_);
      check_nccl(ncclCommInitRank(&c, size(), id, rank()), "ncclCommInitRank");
      comm_ = c;
    });
  }

 protected:
  std::shared_ptr<Communicator> split_impl(int color, int key, const std::string& name) override {
    const MPI_Comm sub = split_mpi(color, key);
    ncclComm_t c = nullptr;
    try {
      const cuda::DeviceGuard guard(device_);
      check_nccl(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &c, nullptr), "ncclCommSplit");
    } catch (...) {
      MPI_Comm sub_copy = sub;
      if (sub_copy != MPI_COMM_NULL) MPI_Comm_free(&sub_copy);
      throw;
    }
    if (sub == MPI_COMM_NULL) return nullptr;
    return std::make_shared<NcclCommunicator>(runtime(), sub, device_, name, options(), c);
  }

  void all_reduce_impl(const Tensor& t, ReduceOp op) override {
    if (t.device().is_cpu()) return MpiCommunicator::all_reduce_impl(t, op);
    const cudaStream_t s = stream(t);
    void* p = t.data_ptr<void>();
    {
      const cuda::DeviceGuard guard(device_);
      check_nccl(ncclAllReduce(p, p, size_t(t.numel()), nccl_type(t.dtype()), op == ReduceOp::sum ? ncclSum : ncclMax,
                               comm_, s),
                 "ncclAllReduce");
    }
    queued();
  }

  void all_gather_impl(const Tensor& in, const Tensor& out) override {
    if (in.device().is_cpu()) return MpiCommunicator::all_gather_impl(in, out);
    const cudaStream_t s = stream(in);
    {
      const cuda::DeviceGuard guard(device_);
      check_nccl(ncclAllGather(in.data_ptr<void>(), out.data_ptr<void>(), in.nbytes(), ncclUint8, comm_, s),
                 "ncclAllGather");
    }
    queued();
  }

  void all_to_all_v_impl(const AllToAllPlan& plan) override {
    if (plan.send.device().is_cpu()) return MpiCommunicator::all_to_all_v_impl(plan);
    enqueue_exchange(plan, stream(plan.send));
    copy_own_blocks(plan, rank());  // device-to-device copies on the same stream
    queued();
  }

  // On the communication stream, after the work queued so far on the current stream;
  // the completion makes the current stream (then) wait for it.
  std::function<void()> all_to_all_v_start_impl(const AllToAllPlan& plan) override {
    if (plan.send.device().is_cpu()) return MpiCommunicator::all_to_all_v_start_impl(plan);
    stream(plan.send);  // checks the device
    cuda::Stream& compute = cuda::current_stream(device_);
    if (!side_) side_ = std::make_unique<cuda::Stream>(device_);
    cuda::Event inputs_ready(device_, /*timing=*/false);
    inputs_ready.record(compute);
    inputs_ready.wait_on(*side_);
    {
      const cuda::StreamGuard on_side(*side_);  // copy_own_blocks and queued() take the current stream
      enqueue_exchange(plan, static_cast<cudaStream_t>(side_->native()));
      copy_own_blocks(plan, rank());
      queued();
    }
    auto done = std::make_shared<cuda::Event>(device_, /*timing=*/false);
    done->record(*side_);
    return [done, device = device_] { done->wait_on(cuda::current_stream(device)); };
  }

  void broadcast_impl(const Tensor& t, int root) override {
    if (t.device().is_cpu()) return MpiCommunicator::broadcast_impl(t, root);
    const cudaStream_t s = stream(t);
    void* p = t.data_ptr<void>();
    {
      const cuda::DeviceGuard guard(device_);
      check_nccl(ncclBroadcast(p, p, t.nbytes(), ncclUint8, root, comm_, s), "ncclBroadcast");
    }
    queued();
  }

 private:
  // The current stream of this communicator's device, after checking the tensor is there.
  cudaStream_t stream(const Tensor& t) const {
    HMOE_CHECK(t.device() == Device::cuda(device_), "this nccl communicator works on cuda:", device_,
               " (and the CPU); the tensor is ", t.meta_str());
    return static_cast<cudaStream_t>(cuda::current_stream(device_).native());
  }

  // all_to_all_v's grouped ncclSend / ncclRecv per non-empty block, on stream s.
  void enqueue_exchange(const AllToAllPlan& plan, cudaStream_t s) {
    const char* send = static_cast<const char*>(plan.send.data_ptr<void>());
    char* recv = static_cast<char*>(plan.recv.data_ptr<void>());
    const size_t rb = plan.row_bytes;
    // Zero blocks are skipped on both sides alike; blocks between one pair of ranks are
    // matched in the order they are issued.
    const cuda::DeviceGuard guard(device_);
    Group group;
    for (int step = 1; step < size(); ++step) {
      const int from = (rank() - step + size()) % size(), to = (rank() + step) % size();
      for (int c = 0; c < plan.chunks; ++c) {
        const size_t i = size_t(from) * size_t(plan.chunks) + size_t(c);
        if (plan.recv_rows[i] > 0)
          check_nccl(ncclRecv(recv + size_t(plan.recv_offsets[i]) * rb, size_t(plan.recv_rows[i]) * rb, ncclUint8, from,
                              comm_, s),
                     "ncclRecv");
      }
      for (int c = 0; c < plan.chunks; ++c) {
        const size_t i = size_t(to) * size_t(plan.chunks) + size_t(c);
        if (plan.send_rows[i] > 0)
          check_nccl(ncclSend(send + size_t(plan.send_offsets[i]) * rb, size_t(plan.send_rows[i]) * rb, ncclUint8, to,
                              comm_, s),
                     "ncclSend");
      }
    }
    group.end();
  }

  // The call's work is queued on the stream: the watchdog watches it until an event
  // recorded after it completes.
  void queued() {
    if (options().timeout_s <= 0) return;
    auto done = std::make_shared<cuda::Event>(device_, /*timing=*/false);
    done->record(cuda::current_stream(device_));
    watch_until_done([done] { return done->query(); });
  }

  std::string async_error() {
    const ncclComm_t c = comm_.load();
    ncclResult_t error = ncclSuccess;
    if (!c || ncclCommGetAsyncError(c, &error) != ncclSuccess || error == ncclSuccess || error == ncclInProgress)
      return {};
    const char* last = ncclGetLastError(c);
    return std::string(ncclGetErrorString(error)) + (last && *last ? std::string(" (") + last + ")" : std::string());
  }

  int device_;
  std::atomic<ncclComm_t> comm_;
  std::unique_ptr<cuda::Stream> side_;  // started all_to_all_v's communication stream, made on first use
};

}  // namespace

namespace detail {

std::shared_ptr<Communicator> make_nccl_world(const Options& options) {
  auto runtime = std::make_shared<mpi::Runtime>();
  const int devices = cuda::device_count();
  HMOE_CHECK(devices > 0, "dist: world rank ", mpi::rank_of(MPI_COMM_WORLD),
             ": the nccl backend needs a CUDA device, and none is visible");
  MPI_Comm world = MPI_COMM_NULL;
  mpi::check(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup");
  const NodePlace node = node_place(world);
  if (!cuda::is_emulated() && options.device < 0 && node.size > devices) {
    MPI_Comm_free(&world);  // NCCL refuses two ranks on one GPU; say so before it does
    HMOE_FAIL("dist: world rank ", mpi::rank_of(MPI_COMM_WORLD), ": the nccl backend needs one GPU per rank, and ",
              "this node runs ", node.size, " ranks with ", devices, " GPU", devices == 1 ? "" : "s", " visible");
  }
  const int device = options.device >= 0 ? options.device : node.rank % devices;
  auto comm = std::make_shared<NcclCommunicator>(std::move(runtime), world, device, "world", options, nullptr);
  comm->init_world();
  return comm;
}

}  // namespace detail
}  // namespace hmoe::dist
