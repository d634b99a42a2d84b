// NCCL under emulation: each communicator is an MPI communicator; collectives run at
// once through mpi_util's piecewise helpers on host memory (the emulated device's), a
// group's sends and receives as one MPI exchange at ncclGroupEnd; failures become NCCL
// result codes with the message in ncclGetLastError. Group state and the last error
// are per thread, as in NCCL.
#include "engine/dist/nccl_emu.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/dist/mpi_util.h"
#include "engine/error.h"

namespace mpi = hmoe::dist::mpi;

struct ncclComm {
  explicit ncclComm(MPI_Comm m)
      : rank(mpi::rank_of(m)), size(mpi::size_of(m)), comm{m, mpi::max_count_from_env(), &ops} {
    // Test knob: after this many calls the communicator reports ncclRemoteError, as
    // NCCL does when a peer fails, so the backend's asynchronous error path runs in CI.
    if (const char* v = std::getenv("HMOE_NCCL_EMU_FAIL_AFTER"); v && *v) fail_after = std::atoll(v);
  }
  ~ncclComm() { MPI_Comm_free(&comm.comm); }
  ncclComm(const ncclComm&) = delete;
  ncclComm& operator=(const ncclComm&) = delete;

  int rank, size;
  mpi::ReduceOps ops;
  mpi::Comm comm;
  // Held by the handle and by each call in progress, so that ncclCommAbort on another
  // thread cannot free the communicator under a call.
  std::atomic<int> refs{1};
  std::atomic<bool> aborted{false};
  std::atomic<int> async_error{ncclSuccess};
  int64_t calls = 0, fail_after = -1;
};

namespace {

thread_local std::string t_last_error;

struct Failure {
  ncclResult_t code;
  std::string message;
};
[[noreturn]] void refuse(ncclResult_t code, std::string message) { throw Failure{code, std::move(message)}; }

void release(ncclComm_t c) {
  if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) std::unique_ptr<ncclComm>{c}.reset();
}

// Runs one call on a communicator: holds it, counts it, and turns exceptions into codes.
template <typename Fn>
ncclResult_t guarded(ncclComm_t c, const char* call, Fn&& fn) {
  if (!c) {
    t_last_error = std::string(call) + ": null communicator";
    return ncclInvalidArgument;
  }
  if (c->aborted.load()) {
    t_last_error = std::string(call) + ": the communicator was aborted";
    return ncclInvalidUsage;
  }
  c->refs.fetch_add(1, std::memory_order_relaxed);
  struct Release {
    ncclComm_t c;
    ~Release() { release(c); }
  } hold{c};
  try {
    fn();
    if (c->fail_after >= 0 && ++c->calls >= c->fail_after) c->async_error = ncclRemoteError;
    return ncclSuccess;
  } catch (const Failure& f) {
    t_last_error = std::string(call) + ": " + f.message;
    return f.code;
  } catch (const std::exception& e) {
    t_last_error = std::string(call) + ": " + e.what();
    return ncclSystemError;
  }
}

struct TypeInfo {
  size_t bytes;
  hmoe::DType dtype;  // for reductions
  bool reducible;
};
TypeInfo type_info(ncclDataType_t t) {
  using hmoe::DType;
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return {1, DType::b8, false};
    case ncclInt32:
      return {4, DType::i32, true};
    case ncclUint32:
      return {4, DType::i32, false};
    case ncclInt64:
      return {8, DType::i64, true};
    case ncclUint64:
      return {8, DType::i64, false};
    case ncclFloat16:
      return {2, DType::f16, true};
    case ncclFloat32:
      return {4, DType::f32, true};
    case ncclFloat64:
      return {8, DType::f64, true};
    case ncclBfloat16:
      return {2, DType::bf16, true};
  }
  refuse(ncclInvalidArgument, "unknown datatype " + std::to_string(int(t)));
}

// A group's queued point-to-point calls (this thread's, as NCCL's groups are).
struct P2p {
  bool send;
  void* buffer;
  size_t bytes;
  int peer;
  ncclComm_t comm;
};
thread_local int t_group_depth = 0;
thread_local std::vector<P2p> t_group;

void check_peer(ncclComm_t c, int peer) {
  if (peer < 0 || peer >= c->size)
    refuse(ncclInvalidArgument, "peer " + std::to_string(peer) + " is not a rank of the communicator (size " +
                                    std::to_string(c->size) + ")");
}

// Posts every queued send and receive (one MPI exchange per communicator), then waits.
void run_group(const std::vector<P2p>& calls) {
  std::vector<std::pair<ncclComm_t, std::unique_ptr<mpi::Exchange>>> exchanges;
  for (const P2p& p : calls) {
    auto it = exchanges.begin();
    while (it != exchanges.end() && it->first != p.comm) ++it;
    if (it == exchanges.end()) {
      exchanges.emplace_back(p.comm, std::make_unique<mpi::Exchange>(p.comm->comm));
      it = exchanges.end() - 1;
    }
    if (p.send)
      it->second->send(p.buffer, int64_t(p.bytes), MPI_BYTE, 1, p.peer);
    else
      it->second->recv(p.buffer, int64_t(p.bytes), MPI_BYTE, 1, p.peer);
  }
  for (auto& [comm, x] : exchanges) x->wait();
}

ncclResult_t point_to_point(bool send, const void* buffer, size_t count, ncclDataType_t type, int peer, ncclComm_t c,
                            const char* call) {
  return guarded(c, call, [&] {
    check_peer(c, peer);
    const P2p p{send, const_cast<void*>(buffer), count * type_info(type).bytes, peer, c};
    if (t_group_depth > 0) {
      c->refs.fetch_add(1, std::memory_order_relaxed);  // held until the group runs
      t_group.push_back(p);
    } else {
      run_group({p});
    }
  });
}

void refuse_in_group() {
  if (t_group_depth > 0)
    refuse(ncclInvalidUsage, "the emulated NCCL groups only ncclSend and ncclRecv, not collectives");
}

// The id: a tag, the world rank that made it (the split's color) and a random nonce.
constexpr char kIdTag[] = "hmoe-nccl-emu";
struct IdFields {
  char tag[sizeof(kIdTag)];
  int creator;
  int64_t nonce;
};
static_assert(sizeof(IdFields) <= NCCL_UNIQUE_ID_BYTES);

}  // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!id || !initialised) {
    t_last_error = "ncclGetUniqueId: the emulated NCCL needs MPI initialised and an id to fill";
    return ncclInvalidUsage;
  }
  IdFields f{};
  std::memcpy(f.tag, kIdTag, sizeof(kIdTag));
  MPI_Comm_rank(MPI_COMM_WORLD, &f.creator);
  std::random_device rd;
  f.nonce = int64_t((uint64_t(rd()) << 32) ^ rd()) & INT64_MAX;
  std::memset(id->internal, 0, sizeof(id->internal));
  std::memcpy(id->internal, &f, sizeof(f));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  try {
    IdFields f{};
    std::memcpy(&f, id.internal, sizeof(f));
    if (!comm || std::memcmp(f.tag, kIdTag, sizeof(kIdTag)) != 0)
      refuse(ncclInvalidArgument, "not an id from the emulated ncclGetUniqueId");
    MPI_Comm m = MPI_COMM_NULL;
    mpi::check(MPI_Comm_split(MPI_COMM_WORLD, f.creator, rank, &m), "MPI_Comm_split");
    auto c = std::make_unique<ncclComm>(m);
    if (c->size != nranks || c->rank != rank)
      refuse(ncclInvalidUsage, "the ranks holding this id are " + std::to_string(c->size) +
                                   ", not nranks = " + std::to_string(nranks) + ", or two of them passed one rank");
    int64_t nonce[2] = {f.nonce, -f.nonce};
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, nonce, 2, MPI_INT64_T, MPI_MAX, m), "MPI_Allreduce");
    if (nonce[0] != -nonce[1]) refuse(ncclInvalidUsage, "the ranks passed different ids made by one rank");
    *comm = c.release();
    return ncclSuccess;
  } catch (const Failure& e) {
    t_last_error = "ncclCommInitRank: " + e.message;
    return e.code;
  } catch (const std::exception& e) {
    t_last_error = std::string("ncclCommInitRank: ") + e.what();
    return ncclSystemError;
  }
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t*) {
  return guarded(comm, "ncclCommSplit", [&] {
    if (!newcomm || color < NCCL_SPLIT_NOCOLOR) refuse(ncclInvalidArgument, "bad color or no output");
    MPI_Comm m = MPI_COMM_NULL;
    mpi::check(MPI_Comm_split(comm->comm.comm, color == NCCL_SPLIT_NOCOLOR ? MPI_UNDEFINED : color, key, &m),
               "MPI_Comm_split");
    *newcomm = m == MPI_COMM_NULL ? nullptr : std::make_unique<ncclComm>(m).release();
  });
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  release(comm);
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  comm->aborted = true;
  release(comm);
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* error) {
  if (!comm || !error) return ncclInvalidArgument;
  *error = ncclResult_t(comm->async_error.load());
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return ncclInvalidArgument;
  *count = comm->size;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError:
      return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
      return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument:
      return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage:
      return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return t_last_error.c_str(); }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t) {
  return guarded(comm, "ncclAllReduce", [&] {
    refuse_in_group();
    const TypeInfo t = type_info(datatype);
    if (!t.reducible || (op != ncclSum && op != ncclMax))
      refuse(ncclInvalidArgument, "the emulation reduces sum and max on signed ints and floats");
    if (sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, count * t.bytes);
    mpi::all_reduce(comm->comm, recvbuff, int64_t(count), t.dtype,
                    op == ncclSum ? hmoe::dist::ReduceOp::sum : hmoe::dist::ReduceOp::max);
  });
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t) {
  return guarded(comm, "ncclAllGather", [&] {
    refuse_in_group();
    // Each rank's block as bytes (rows of one byte).
    const size_t bytes = sendcount * type_info(datatype).bytes;
    mpi::all_gather(comm->comm, sendbuff, recvbuff, int64_t(bytes), MPI_BYTE, 1);
  });
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t) {
  return guarded(comm, "ncclBroadcast", [&] {
    refuse_in_group();
    check_peer(comm, root);
    const size_t bytes = count * type_info(datatype).bytes;
    if (comm->rank == root && sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, bytes);
    mpi::broadcast(comm->comm, recvbuff, bytes, root);
  });
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t) {
  return point_to_point(true, sendbuff, count, datatype, peer, comm, "ncclSend");
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t) {
  return point_to_point(false, recvbuff, count, datatype, peer, comm, "ncclRecv");
}

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) {
    t_last_error = "ncclGroupEnd: no group was started";
    return ncclInvalidUsage;
  }
  if (--t_group_depth > 0) return ncclSuccess;
  const std::vector<P2p> calls = std::move(t_group);
  t_group.clear();
  ncclResult_t result = ncclSuccess;
  try {
    run_group(calls);
  } catch (const std::exception& e) {
    t_last_error = std::string("ncclGroupEnd: ") + e.what();
    result = ncclSystemError;
  }
  for (const P2p& p : calls) release(p.comm);
  return result;
}

}  // extern "C"
