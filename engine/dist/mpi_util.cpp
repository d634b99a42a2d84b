// MPI helpers: the runtime's lifetime, errors, datatypes (rows nested past max_count
// bytes), the bf16/f16 user reductions, and collectives and exchanges in pieces.
#include "engine/dist/mpi_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace hmoe::dist::mpi {
namespace {

std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, size_t(len));
}

// inout[i] = in[i] op inout[i], rounded to H. NaN propagates through max.
template <typename H, bool kMax>
void half_reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  static_assert(sizeof(H) == 2);
  const H* a = static_cast<const H*>(in);
  H* b = static_cast<H*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = float(a[i]), y = float(b[i]);
    b[i] = H(kMax ? (x > y || std::isnan(x) ? x : y) : x + y);
  }
}

}  // namespace

Runtime::Runtime() {
  int initialised = 0, finalised = 0;
  check(MPI_Initialized(&initialised), "MPI_Initialized");
  check(MPI_Finalized(&finalised), "MPI_Finalized");
  HMOE_CHECK(!finalised,
             "dist: MPI was finalised in this process already and cannot be initialised again (make one "
             "dist::Environment per process)");
  if (initialised) {
    check(MPI_Query_thread(&level_), "MPI_Query_thread");
  } else {
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &level_), "MPI_Init_thread");
    owned_ = true;
  }
  // Errors come back as codes (turned into hmoe::Error), not as the default abort.
  // Communicators made from the world inherit the handler.
  check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
}

Runtime::~Runtime() {
  if (owned_) MPI_Finalize();
}

void check(int rc, const char* call) {
  if (rc != MPI_SUCCESS) HMOE_FAIL(call, " failed: ", error_string(rc));
}

void abort_job(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this satisfies [[noreturn]] if it ever did
}

int rank_of(MPI_Comm comm) {
  int r = 0;
  check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank");
  return r;
}

int size_of(MPI_Comm comm) {
  int s = 0;
  check(MPI_Comm_size(comm, &s), "MPI_Comm_size");
  return s;
}

int64_t max_count_from_env() {
  if (const char* v = std::getenv("HMOE_DIST_MAX_COUNT"); v && *v) {
    const long long n = std::atoll(v);
    HMOE_CHECK(n >= 1 && n <= INT_MAX, "HMOE_DIST_MAX_COUNT must be in [1, ", INT_MAX, "] (got '", v, "')");
    return n;
  }
  return INT_MAX;
}

// --- datatypes ---------------------------------------------------------------------------------
Datatype::Datatype(MPI_Datatype t) : t_(t) {
  const int rc = MPI_Type_commit(&t_);
  if (rc != MPI_SUCCESS) {
    MPI_Type_free(&t_);
    check(rc, "MPI_Type_commit");
  }
}

Datatype::~Datatype() {
  if (t_ != MPI_DATATYPE_NULL) MPI_Type_free(&t_);
}

Datatype& Datatype::operator=(Datatype&& o) noexcept {
  if (this != &o) {
    if (t_ != MPI_DATATYPE_NULL) MPI_Type_free(&t_);
    t_ = o.t_;
    o.t_ = MPI_DATATYPE_NULL;
  }
  return *this;
}

Datatype Datatype::bytes(size_t n, int64_t max_count) {
  const size_t max = size_t(max_count);
  MPI_Datatype t = MPI_DATATYPE_NULL;
  if (n <= max) {
    check(MPI_Type_contiguous(int(n), MPI_BYTE, &t), "MPI_Type_contiguous");
    return Datatype(t);
  }
  // q chunks of max bytes, then the r bytes left: every count stays <= max.
  const size_t q = n / max, r = n % max;
  HMOE_CHECK(q <= max, "a row of ", n, " bytes is too large for MPI datatypes with counts up to ", max);
  MPI_Datatype chunk = MPI_DATATYPE_NULL, body = MPI_DATATYPE_NULL;
  check(MPI_Type_contiguous(int(max), MPI_BYTE, &chunk), "MPI_Type_contiguous");
  const int rc = MPI_Type_contiguous(int(q), chunk, &body);
  MPI_Type_free(&chunk);
  check(rc, "MPI_Type_contiguous");
  if (r == 0) return Datatype(body);
  MPI_Datatype tail = MPI_DATATYPE_NULL;
  if (const int rc2 = MPI_Type_contiguous(int(r), MPI_BYTE, &tail); rc2 != MPI_SUCCESS) {
    MPI_Type_free(&body);
    check(rc2, "MPI_Type_contiguous");
  }
  int lengths[2] = {1, 1};
  MPI_Aint displacements[2] = {0, MPI_Aint(q * max)};
  MPI_Datatype types[2] = {body, tail};
  const int rc3 = MPI_Type_create_struct(2, lengths, displacements, types, &t);
  MPI_Type_free(&body);
  MPI_Type_free(&tail);
  check(rc3, "MPI_Type_create_struct");
  return Datatype(t);
}

Datatype Datatype::stretched(int64_t n, MPI_Datatype t, size_t extent) {
  MPI_Datatype block = MPI_DATATYPE_NULL, out = MPI_DATATYPE_NULL;
  check(MPI_Type_contiguous(int(n), t, &block), "MPI_Type_contiguous");
  const int rc = MPI_Type_create_resized(block, 0, MPI_Aint(extent), &out);
  MPI_Type_free(&block);
  check(rc, "MPI_Type_create_resized");
  return Datatype(out);
}

MPI_Datatype element_type(DType dt) {
  switch (dt) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::bf16:
    case DType::f16:
      return MPI_UINT16_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::b8:
      return MPI_UINT8_T;
  }
  HMOE_FAIL("no MPI type for dtype ", dtype_name(dt));
}

// --- reductions -----------------------------------------------------------------------------
ReduceOps::ReduceOps() {
  MPI_User_function* fns[2][2] = {{half_reduce<bf16, false>, half_reduce<bf16, true>},
                                  {half_reduce<f16, false>, half_reduce<f16, true>}};
  for (int t = 0; t < 2; ++t)
    for (int o = 0; o < 2; ++o) {
      half_[t][o] = MPI_OP_NULL;
      check(MPI_Op_create(fns[t][o], /*commute=*/1, &half_[t][o]), "MPI_Op_create");
    }
}

ReduceOps::~ReduceOps() {
  for (auto& per_type : half_)
    for (MPI_Op& op : per_type)
      if (op != MPI_OP_NULL) MPI_Op_free(&op);
}

MPI_Op ReduceOps::get(ReduceOp op, DType dt) const {
  const int o = op == ReduceOp::sum ? 0 : 1;
  switch (dt) {
    case DType::bf16:
      return half_[0][o];
    case DType::f16:
      return half_[1][o];
    case DType::f32:
    case DType::f64:
    case DType::i32:
    case DType::i64:
      return op == ReduceOp::sum ? MPI_SUM : MPI_MAX;
    case DType::b8:
      break;
  }
  HMOE_FAIL("no reduction for dtype ", dtype_name(dt));
}

// --- collectives ---------------------------------------------------------------------------
void all_reduce(const Comm& c, void* data, int64_t count, DType dt, ReduceOp op) {
  char* p = static_cast<char*>(data);
  const size_t esize = dtype_size(dt);
  const MPI_Datatype type = element_type(dt);
  const MPI_Op mop = c.ops->get(op, dt);
  for_each_piece(count, c.max_count, [&](int64_t first, int64_t n) {
    check(MPI_Allreduce(MPI_IN_PLACE, p + size_t(first) * esize, int(n), type, mop, c.comm), "MPI_Allreduce");
  });
}

void all_gather(const Comm& c, const void* in, void* out, int64_t rows, MPI_Datatype row, size_t row_bytes) {
  const char* src = static_cast<const char*>(in);
  char* dst = static_cast<char*>(out);
  if (rows <= c.max_count) {
    check(MPI_Allgather(src, int(rows), row, dst, int(rows), row, c.comm), "MPI_Allgather");
    return;
  }
  // Piece by piece: each rank's rows [first, first + n) land at that offset of its
  // block, the blocks one block (rows * row_bytes) apart.
  for_each_piece(rows, c.max_count, [&](int64_t first, int64_t n) {
    const Datatype piece = Datatype::stretched(n, row, size_t(rows) * row_bytes);
    check(MPI_Allgather(src + size_t(first) * row_bytes, int(n), row, dst + size_t(first) * row_bytes, 1, piece.get(),
                        c.comm),
          "MPI_Allgather");
  });
}

void broadcast(const Comm& c, void* data, size_t nbytes, int root) {
  char* p = static_cast<char*>(data);
  for_each_piece(int64_t(nbytes), c.max_count, [&](int64_t first, int64_t n) {
    check(MPI_Bcast(p + first, int(n), MPI_BYTE, root, c.comm), "MPI_Bcast");
  });
}

void barrier(const Comm& c) { check(MPI_Barrier(c.comm), "MPI_Barrier"); }

// --- exchanges -----------------------------------------------------------------------------
void Exchange::send(const void* p, int64_t count, MPI_Datatype t, size_t extent, int peer) {
  const char* base = static_cast<const char*>(p);
  for_each_piece(count, c_.max_count, [&](int64_t first, int64_t n) {
    MPI_Request r = MPI_REQUEST_NULL;
    check(MPI_Isend(base + size_t(first) * extent, int(n), t, peer, kTag, c_.comm, &r), "MPI_Isend");
    requests_.push_back(r);
    peers_.push_back(peer);
  });
}

void Exchange::recv(void* p, int64_t count, MPI_Datatype t, size_t extent, int peer) {
  char* base = static_cast<char*>(p);
  for_each_piece(count, c_.max_count, [&](int64_t first, int64_t n) {
    MPI_Request r = MPI_REQUEST_NULL;
    check(MPI_Irecv(base + size_t(first) * extent, int(n), t, peer, kTag, c_.comm, &r), "MPI_Irecv");
    requests_.push_back(r);
    peers_.push_back(peer);
  });
}

void Exchange::wait() {
  status_.resize(requests_.size());
  const int rc = MPI_Waitall(int(requests_.size()), requests_.data(), status_.data());
  int failed = MPI_SUCCESS, peer = -1;
  if (rc == MPI_ERR_IN_STATUS)
    for (size_t i = 0; i < requests_.size() && failed == MPI_SUCCESS; ++i)
      if (status_[i].MPI_ERROR != MPI_SUCCESS && status_[i].MPI_ERROR != MPI_ERR_PENDING)
        failed = status_[i].MPI_ERROR, peer = peers_[i];
  requests_.clear();
  peers_.clear();
  if (failed != MPI_SUCCESS)
    HMOE_FAIL("MPI_Waitall failed on a message with rank ", peer, ": ", error_string(failed),
              " (do the two ranks' counts match?)");
  check(rc, "MPI_Waitall");
}

}  // namespace hmoe::dist::mpi
