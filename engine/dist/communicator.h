/// @file
/// The communicator: one interface for the collectives that data and expert parallelism
/// need (split, all-reduce, all-gather, all-to-all-v, broadcast, barrier) on CPU and
/// device tensors, implemented by a backend chosen at run time (single process, MPI,
/// NCCL), and Environment, the RAII owner of MPI's lifetime that makes the world.
/// Includes no MPI or NCCL header, so any code may use it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "engine/tensor.h"

/// Collective communication between processes (single process, MPI, NCCL).
namespace hmoe::dist {

class Watchdog;
struct WatchdogActions;
class Communicator;

/// Which implementation carries the collectives.
enum class Backend : uint8_t { automatic, single, mpi, nccl };
std::string_view backend_name(Backend b);   ///< "auto", "single", "mpi", "nccl"
Backend parse_backend(std::string_view s);  ///< throws hmoe::Error naming the choices
/// Whether this binary has the backend (single and automatic: always; mpi: built with
/// HMOE_DIST=mpi; nccl: also HMOE_GPU=cuda with NCCL, or HMOE_GPU=emu (emulated NCCL)).
bool backend_built(Backend b);
/// Whether this process was started by an MPI launcher (mpirun, srun with PMI/PMIx).
bool launched_by_mpi();

/// The reduction of all_reduce.
enum class ReduceOp : uint8_t { sum, max };

/// How Environment makes the world.
struct Options {
  /// automatic: single unless started by an MPI launcher; then nccl where the build has
  /// the real CUDA backend with NCCL and a GPU is visible, else mpi.
  Backend backend = Backend::automatic;
  /// The watchdog: a collective still incomplete after this many seconds ends the whole
  /// job (every rank, exit code 124) with a message naming this rank, the collective and
  /// its sequence number. 0 turns it off. The single backend has none (nothing waits).
  double timeout_s = 600;
  /// Every collective first checks, with small extra collectives, that all ranks called
  /// the same one (same sequence number) with agreeing arguments, and all_to_all_v that
  /// the counts match pairwise; a disagreement throws on every rank instead of hanging
  /// or corrupting memory. Costs a small all-reduce per call (all_to_all_v: also a small
  /// all-to-all and another all-reduce).
  bool verify = false;
  /// nccl: this rank's CUDA device (-1: its rank among the processes on its node,
  /// modulo the visible devices).
  int device = -1;
};

/// all_to_all_v's buffer layout when each peer's rows come in `chunks` pieces (the
/// expert-parallel layer: one chunk per local expert of the receiving rank). Counts are
/// always indexed [peer * chunks + chunk]. A buffer is peer-major (peer 0's chunks in
/// order, then peer 1's, ...) or chunk-major (chunk 0 of every peer in rank order, then
/// chunk 1, ...). Dispatch sends peer-major and receives chunk-major, so the rows arrive
/// grouped by local expert, source-rank-minor; the reverse exchange swaps both.
struct ChunkLayout {
  int chunks = 1;                 ///< pieces per peer (1: one block per peer)
  bool send_chunk_major = false;  ///< whether send is laid out chunk-major (else peer-major)
  bool recv_chunk_major = false;  ///< whether recv is laid out chunk-major (else peer-major)
};

/// An all_to_all_v in flight (Communicator::start_all_to_all_v): the transfer proceeds
/// while the caller computes, and wait() completes it, after which the data is where the
/// blocking call leaves it (CPU tensors: in place; cuda tensors: ordered before the work
/// queued later on the calling thread's current stream). It keeps the call's tensors
/// alive until then. Destroying one still in flight waits for it.
class PendingExchange {
 public:
  PendingExchange() = default;  ///< nothing in flight
  /// Takes o's exchange over (o then has none in flight).
  PendingExchange(PendingExchange&& o) noexcept { *this = std::move(o); }
  /// Waits for this one's exchange, if any, then takes o's over.
  PendingExchange& operator=(PendingExchange&& o) noexcept;
  PendingExchange(const PendingExchange&) = delete;
  PendingExchange& operator=(const PendingExchange&) = delete;
  ~PendingExchange();

  /// Whether an exchange was started and not yet waited for.
  bool in_flight() const { return comm_ != nullptr; }
  /// Blocks (watched by the communicator's watchdog) until this rank's part is done; an
  /// error names the call as the blocking one does. Nothing in flight: returns at once.
  void wait();

 private:
  friend class Communicator;
  Communicator* comm_ = nullptr;
  uint64_t seq_ = 0;
  double bytes_ = 0;
  Device device_ = Device::cpu();
  std::function<void()> finish_;  // the backend's completion (empty: done at the start)
  Tensor send_, recv_;            // alive until the transfer completes
};

/// A group of ranks and its collectives. Every rank of the group must call the same
/// collectives in the same order with agreeing arguments (Options::verify checks).
/// One thread at a time uses a communicator; different ones may be used concurrently.
///
/// Tensors must be contiguous, and a call's tensors on one device: the CPU, or the
/// CUDA device (Device::cuda) where the backend takes it. The stream contract:
///  - CPU tensors (every backend): the call is blocking; the data is in place on return.
///  - cuda tensors: the collective is ordered after the work queued so far on the calling
///    thread's current stream of the tensor's device (cuda::current_stream), and work
///    queued there later sees its result.
///    nccl: enqueued on that stream, the call returns once it is enqueued (asynchronous);
///      synchronize the stream (or copy to the CPU, which does) before reading on the
///      host, and keep the tensors alive until then (memory from the caching allocator
///      on the same stream is reused only in stream order).
///    mpi (emulated device only: its memory is host memory): the stream is synchronized,
///      then the call completes on the host before it returns. Real GPU tensors are
///      refused (use nccl).
///    single: copies are queued on that stream.
/// Collectives of zero elements return at once; all_to_all_v with nothing to send or
/// receive still takes part (its peers may exchange among themselves). The collectives
/// are not differentiable (the expert-parallel layer wraps them); a tensor they write
/// has its storage's version bumped, as in-place ops do. Errors are hmoe::Error naming
/// the backend, the rank, the group, the collective and its number.
class Communicator {
 public:
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  /// This process's rank in the communicator.
  int rank() const { return rank_; }
  /// The number of ranks.
  int size() const { return size_; }
  int world_rank() const { return world_rank_; }  ///< this process's rank in the world
  /// The implementation.
  Backend backend() const { return backend_; }
  const std::string& name() const { return name_; }  ///< "world", "world/1" (split by color 1), ...
  /// The options of the environment that made it.
  const Options& options() const { return options_; }
  /// Collectives started on this communicator so far (every call counts, split and
  /// barrier included): equal on all its ranks between calls. Timeouts report it.
  uint64_t sequence() const { return sequence_; }
  /// The cuda device whose tensors this communicator's device collectives take: nccl's
  /// own (the rank's); -1 where any cuda device's tensors go (single, mpi).
  virtual int device() const { return -1; }

  /// Ranks calling with the same color form a new communicator, ranked by (key, rank).
  /// A negative color joins none and gets nullptr. Collective over this communicator.
  std::shared_ptr<Communicator> split(int color, int key);

  /// In place: every rank ends with the element-wise sum or max over the ranks. Floats
  /// and ints (f32, f64, bf16, f16, i32, i64); half types reduce in their own precision.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum);

  /// out (out.numel() == size() * in.numel(), same dtype and device, not overlapping
  /// in) receives every rank's `in` in rank order. Any dtype.
  void all_gather(const Tensor& in, const Tensor& out);
  /// Allocates out: [size() * in.size(0), in.shape[1:]...] ([size()] for a 0-d in).
  Tensor all_gather(const Tensor& in);

  /// Rows are slices along dim 0 (a 1-d tensor's rows are its elements); send and recv
  /// share the shape after dim 0 (the row), dtype and device. send_rows[p * chunks + c]
  /// rows of send go to rank p (chunk c); recv_rows[p * chunks + c] rows from rank p
  /// (its chunk c) land in recv; both sized size() * chunks, buffers laid out as
  /// `layout` says and holding exactly the rows counted. recv_rows on rank q must equal
  /// the send_rows rank p passes for q (verify checks). Zero counts, ranks that send or
  /// receive nothing, and messages past 2^31 bytes or rows work. Any dtype.
  void all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, const Tensor& recv,
                    std::span<const int64_t> recv_rows, const ChunkLayout& layout = {});
  /// Allocates recv: [sum(recv_rows), send.shape[1:]...].
  Tensor all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, std::span<const int64_t> recv_rows,
                      const ChunkLayout& layout = {});

  /// all_to_all_v started without waiting for it: the same arguments and checks, and one
  /// sequence number; the result is in recv after the returned exchange's wait(). Until
  /// then send must not be written nor recv read, and this communicator takes no other
  /// call (an hmoe::Error says so). mpi: the messages are posted non-blocking and
  /// completed by wait() (MPI progresses them inside its calls); nccl: enqueued on a
  /// communication stream of its own after the work queued so far on the current stream,
  /// which wait() makes wait for it (on the device; the host does not block); single:
  /// done at the start.
  PendingExchange start_all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, const Tensor& recv,
                                     std::span<const int64_t> recv_rows, const ChunkLayout& layout = {});

  /// In place: every rank ends with root's t. Any dtype.
  void broadcast(const Tensor& t, int root);

  /// Returns once every rank has called it (on the host: queued device work is not waited for).
  void barrier();

 protected:
  /// The base of a backend's communicator.
  Communicator(Backend backend, int rank, int size, int world_rank, std::string name, Options options);

  /// A reference to the callable that call() runs, made without an allocation (a small
  /// message costs about a microsecond: a heap-allocated std::function would show).
  class Body {
   public:
    /// Refers to f, which must outlive the Body.
    template <typename F>
    requires(!std::is_same_v<std::decay_t<F>, Body>)
        Body(F&& f)  // NOLINT(google-explicit-constructor): lambdas convert implicitly
        : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
          run_([](void* o) { (*static_cast<std::remove_reference_t<F>*>(o))(); }) {}
    /// Runs the callable.
    void operator()() const { run_(object_); }

   private:
    void* object_;
    void (*run_)(void*);
  };

  /// What a backend implements: arguments are checked and non-empty, the call is
  /// numbered, profiled and watched. Errors thrown here get the call's context prefixed.
  virtual std::shared_ptr<Communicator> split_impl(int color, int key, const std::string& name) = 0;
  /// all_reduce on a non-empty tensor.
  virtual void all_reduce_impl(const Tensor& t, ReduceOp op) = 0;
  /// all_gather on non-empty tensors.
  virtual void all_gather_impl(const Tensor& in, const Tensor& out) = 0;
  /// all_to_all_v's checked arguments for a backend: row_bytes > 0; the offsets are in
  /// rows, indexed [peer * chunks + chunk].
  struct AllToAllPlan {
    const Tensor& send;  ///< the rows to send
    const Tensor& recv;  ///< where received rows land
    /// @{
    /// Rows to and from each [peer * chunks + chunk].
    std::span<const int64_t> send_rows, recv_rows;
    /// @}
    /// @{
    /// Where those rows start in send and recv, in rows.
    std::span<const int64_t> send_offsets, recv_offsets;
    /// @}
    int chunks;        ///< pieces per peer
    size_t row_bytes;  ///< bytes of one row
  };
  /// all_to_all_v with its offsets computed.
  virtual void all_to_all_v_impl(const AllToAllPlan& plan) = 0;
  /// Starts the exchange and returns what completes it (the plan's spans are not valid
  /// then). The default runs all_to_all_v_impl at once and returns nothing to do.
  virtual std::function<void()> all_to_all_v_start_impl(const AllToAllPlan& plan);
  /// broadcast on a non-empty tensor.
  virtual void broadcast_impl(const Tensor& t, int root) = 0;
  /// barrier.
  virtual void barrier_impl() = 0;

  /// Copies this rank's blocks to itself (send's blocks for `rank` into recv's).
  static void copy_own_blocks(const AllToAllPlan& plan, int rank);

  /// Runs one numbered, profiled, watched call; an hmoe::Error thrown by body gets the
  /// call's context prefixed. The public collectives run through it; a backend uses it
  /// for work outside them (the nccl world's creation).
  void call(const char* op, Device device, double bytes, Body body);

  /// Backends with something that can hang start the watchdog (engine/dist/watchdog.h)
  /// in their constructor and stop it first thing in their destructor, since its
  /// callbacks use the backend's members.
  void start_watchdog(WatchdogActions actions);
  /// Stops the watchdog (before the backend's members it uses go).
  void stop_watchdog();
  /// An asynchronous backend (nccl) keeps the current call watched until done() is true.
  void watch_until_done(std::function<bool()> done);

 private:
  friend class PendingExchange;
  /// "dist[mpi] rank 1 of 2 in world/0 (world rank 3), all_reduce #7: "
  std::string context(const char* op, uint64_t seq) const;
  /// The checked, planned all_to_all_v (inside call()); async: started, its completion
  /// returned.
  std::function<void()> exchange(const Tensor& send, std::span<const int64_t> send_rows, const Tensor& recv,
                                 std::span<const int64_t> recv_rows, const ChunkLayout& layout, bool async);
  /// PendingExchange::wait's body: the backend's completion, profiled and watched.
  void finish(PendingExchange& p);
  /// Options::verify: every rank called `op` with this signature (the call's arguments).
  void verify_same_call(const char* op, std::span<const int64_t> signature);
  void verify_counts(const AllToAllPlan& plan);

  Backend backend_;
  int rank_, size_, world_rank_;
  std::string name_;
  Options options_;
  uint64_t sequence_ = 0;
  uint64_t in_flight_ = 0;        ///< the sequence number of a started all_to_all_v not yet waited for
  std::vector<int64_t> offsets_;  ///< all_to_all_v's block offsets, kept to save an allocation per call
  std::unique_ptr<Watchdog> watchdog_;
};

/// The process's distributed environment: resolves the backend, initialises MPI (thread
/// level MPI_THREAD_MULTIPLE, errors returned, not fatal) when the backend uses it, and
/// makes the world communicator. One per process (MPI cannot be initialised twice); MPI
/// is finalised when the environment and every communicator made from it are gone.
class Environment {
 public:
  /// Resolves the backend, initialises MPI if it is used, and makes the world.
  explicit Environment(const Options& options = {});
  /// Releases the world. Destroyed by an exception's unwinding in a world of several
  /// ranks, it ends the job (MPI_Abort) instead, so that no other rank waits for this one.
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  /// The communicator of every process.
  Communicator& world() const { return *world_; }
  /// The world, shared.
  const std::shared_ptr<Communicator>& world_ptr() const { return world_; }
  /// The backend the world uses.
  Backend backend() const { return world_->backend(); }

  /// Prints "hmoe dist: rank R: why" and ends every rank of the job with `code`
  /// (MPI_Abort; in a single process, std::_Exit).
  [[noreturn]] void abort(const std::string& why, int code = 1) const;

 private:
  std::shared_ptr<Communicator> world_;
  int uncaught_at_start_;
};

}  // namespace hmoe::dist
