// MPI helpers shared by the mpi backend, the nccl backend's host side and the emulated
// NCCL: MPI's lifetime (RAII), errors as hmoe::Error, datatypes, the half-precision
// reductions, and collectives and point-to-point exchanges whose int counts never
// overflow (rows as one contiguous datatype, messages in pieces of at most max_count).
// Internal to engine/dist.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dtype.h"

namespace hmoe::dist::mpi {

// MPI_Init_thread (MPI_THREAD_MULTIPLE: several communicators may be used from several
// threads, and the watchdog's thread calls MPI_Abort) with errors returned rather than
// fatal; MPI_Finalize when destroyed. An MPI that someone else initialised is adopted
// and left for them to finalise.
class Runtime {
 public:
  Runtime();
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  int thread_level() const { return level_; }

 private:
  bool owned_ = false;
  int level_ = 0;
};

// Throws hmoe::Error "<call> failed: <MPI's message>" unless rc is MPI_SUCCESS.
void check(int rc, const char* call);
// MPI_Abort on MPI_COMM_WORLD.
[[noreturn]] void abort_job(int code);
int rank_of(MPI_Comm comm);
int size_of(MPI_Comm comm);

// The largest count one MPI call is given: INT_MAX, or HMOE_DIST_MAX_COUNT (>= 1) when
// set, the test knob that sends small messages down the path of messages past 2^31
// bytes or elements.
int64_t max_count_from_env();

// An owned, committed derived datatype.
class Datatype {
 public:
  Datatype() = default;
  ~Datatype();
  Datatype(Datatype&& o) noexcept : t_(o.t_) { o.t_ = MPI_DATATYPE_NULL; }
  Datatype& operator=(Datatype&& o) noexcept;
  Datatype(const Datatype&) = delete;
  Datatype& operator=(const Datatype&) = delete;
  MPI_Datatype get() const { return t_; }

  // n > 0 contiguous bytes as one element (a row); nested when n > max_count, so that
  // no count passed to MPI overflows.
  static Datatype bytes(size_t n, int64_t max_count);
  // n elements of t, its extent stretched to `extent` bytes (so that consecutive ones
  // land `extent` bytes apart).
  static Datatype stretched(int64_t n, MPI_Datatype t, size_t extent);

 private:
  explicit Datatype(MPI_Datatype t);  // commits t
  MPI_Datatype t_ = MPI_DATATYPE_NULL;
};

// MPI's type for a dtype's elements (bf16 and f16 as 16-bit words, bool as bytes).
MPI_Datatype element_type(DType dt);

// The reductions: MPI's own for f32, f64, i32, i64; user ops for bf16 and f16 that
// round each partial result to the type (as NCCL does). Create after MPI_Init, free
// before MPI_Finalize (a communicator owns one).
class ReduceOps {
 public:
  ReduceOps();
  ~ReduceOps();
  ReduceOps(const ReduceOps&) = delete;
  ReduceOps& operator=(const ReduceOps&) = delete;
  MPI_Op get(ReduceOp op, DType dt) const;

 private:
  MPI_Op half_[2][2];  // [bf16, f16][sum, max]
};

// What the helpers below need of a communicator.
struct Comm {
  MPI_Comm comm = MPI_COMM_NULL;
  int64_t max_count = INT_MAX;
  const ReduceOps* ops = nullptr;
};

// Calls fn(first, n) for consecutive pieces [first, first + n) of [0, total), each of
// at most max_count (none for total 0).
template <typename Fn>
void for_each_piece(int64_t total, int64_t max_count, Fn&& fn) {
  for (int64_t first = 0; first < total; first += max_count) fn(first, std::min(max_count, total - first));
}

void all_reduce(const Comm& c, void* data, int64_t count, DType dt, ReduceOp op);  // in place
// Every rank's `rows` rows (each one element of the datatype `row`, row_bytes long), in
// rank order.
void all_gather(const Comm& c, const void* in, void* out, int64_t rows, MPI_Datatype row, size_t row_bytes);
void broadcast(const Comm& c, void* data, size_t nbytes, int root);
void barrier(const Comm& c);

// The point-to-point messages of an exchange: posted non-blocking (each in pieces of
// at most max_count elements of its type, matched in order since MPI does not let
// messages with one source, tag and communicator overtake each other), then completed
// together by wait(). Reusable: a communicator keeps one, so that an exchange
// allocates nothing once its buffers have grown.
class Exchange {
 public:
  explicit Exchange(const Comm& c) : c_(c) {}
  void send(const void* p, int64_t count, MPI_Datatype t, size_t extent, int peer);
  void recv(void* p, int64_t count, MPI_Datatype t, size_t extent, int peer);
  void wait();

 private:
  static constexpr int kTag = 0x6d6f65;
  const Comm& c_;
  std::vector<MPI_Request> requests_;
  std::vector<int> peers_;  // of each request, for error messages
  std::vector<MPI_Status> status_;
};

}  // namespace hmoe::dist::mpi
