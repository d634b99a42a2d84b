// The communicator's shared part: argument checks, sequence numbers, profiler events,
// the watchdog hooks and Options::verify, around the backends' implementations; and
// the helpers of backend.h.
#include "engine/dist/communicator.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <sstream>
#include <utility>

#include "engine/dist/backend.h"
#include "engine/dist/watchdog.h"
#include "engine/profiler.h"
#if defined(HMOE_WITH_CUDA_BACKEND)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::dist {
namespace {

// The collectives' codes in Options::verify's signatures.
enum Kind : int64_t { kSplit = 1, kAllReduce, kAllGather, kAllToAllV, kBroadcast, kBarrier };
constexpr const char* kKindNames[] = {"?", "split", "all_reduce", "all_gather", "all_to_all_v", "broadcast", "barrier"};

void check_contiguous(const Tensor& t, const char* what) {
  HMOE_CHECK(t.defined(), what, " is an undefined tensor");
  HMOE_CHECK(t.is_contiguous(), what, " must be contiguous (got ", t.meta_str(), ")");
}

void check_same(const Tensor& a, const Tensor& b, const char* what_a, const char* what_b) {
  HMOE_CHECK(a.dtype() == b.dtype() && a.device() == b.device(), what_a, " and ", what_b,
             " must have one dtype and device (got ", a.meta_str(), " and ", b.meta_str(), ")");
}

Device device_or_cpu(const Tensor& t) { return t.defined() ? t.device() : Device::cpu(); }

int64_t checked_total(std::span<const int64_t> counts, size_t expected_size, const char* what) {
  HMOE_CHECK(counts.size() == expected_size, what, " has ", counts.size(),
             " entries; it needs size() * chunks = ", expected_size);
  int64_t s = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    HMOE_CHECK(counts[i] >= 0, what, "[", i, "] is negative (", counts[i], ")");
    s += counts[i];
  }
  return s;
}

// Whether two tensors of at least one dim have rows (the shape after dim 0) of one shape.
// A call's host part, watched from construction to destruction (no watchdog: nothing).
class WatchScope {
 public:
  WatchScope(Watchdog* w, const char* op, uint64_t seq, double bytes) : w_(w) {
    if (w_) w_->begin(op, seq, bytes);
  }
  ~WatchScope() {
    if (w_) w_->end();
  }
  WatchScope(const WatchScope&) = delete;
  WatchScope& operator=(const WatchScope&) = delete;

 private:
  Watchdog* w_;
};

bool same_rows(const Tensor& a, const Tensor& b) {
  return a.dim() >= 1 && b.dim() >= 1 &&
         std::equal(a.shape().begin() + 1, a.shape().end(), b.shape().begin() + 1, b.shape().end());
}

}  // namespace

Communicator::Communicator(Backend backend, int rank, int size, int world_rank, std::string name, Options options)
    : backend_(backend), rank_(rank), size_(size), world_rank_(world_rank), name_(std::move(name)), options_(options) {}

Communicator::~Communicator() = default;

std::string Communicator::context(const char* op, uint64_t seq) const {
  std::ostringstream os;
  os << "dist[" << backend_name(backend_) << "] rank " << rank_ << " of " << size_ << " in " << name_ << " (world rank "
     << world_rank_ << ")";
  if (op) os << ", " << op << " #" << seq << ": ";
  return os.str();
}

void Communicator::start_watchdog(WatchdogActions actions) {
  if (options_.timeout_s > 0)
    watchdog_ = std::make_unique<Watchdog>(context(nullptr, 0), options_.timeout_s, std::move(actions));
}

void Communicator::stop_watchdog() { watchdog_.reset(); }

void Communicator::watch_until_done(std::function<bool()> done) {
  if (watchdog_) watchdog_->until_done(std::move(done));
}

void Communicator::call(const char* op, Device device, double bytes, Body body) {
  const uint64_t seq = ++sequence_;
  const ProfileScope scope(op, device, 0, bytes);  // one trace event per collective, with its bytes
  const WatchScope watch(watchdog_.get(), op, seq, bytes);
  try {
    HMOE_CHECK(in_flight_ == 0, "all_to_all_v #", in_flight_, " is still in flight on this communicator: wait() for ",
               "it before the next call");
    body();
  } catch (const Error& e) {
    throw Error(context(op, seq) + e.what());
  }
}

// --- Options::verify ---------------------------------------------------------------------
void Communicator::verify_same_call(const char* op, std::span<const int64_t> signature) {
  // One all-reduce(max) of (sig, -sig) gives every field's maximum and minimum.
  constexpr size_t kFields = 5;
  static constexpr const char* kNames[kFields] = {"collective", "sequence number", "dtype",
                                                  "elements (row elements for all_to_all_v)",
                                                  "reduce op, root or chunks"};
  HMOE_CHECK(signature.size() <= kFields - 2, "internal: signature too long");
  int64_t mine[kFields] = {};
  const int64_t kind = [&] {
    for (int64_t k = 1; k < int64_t(std::size(kKindNames)); ++k)
      if (std::strcmp(kKindNames[k], op) == 0) return k;
    return int64_t(0);
  }();
  mine[0] = kind;
  mine[1] = int64_t(sequence_);
  for (size_t i = 0; i < signature.size(); ++i) mine[2 + i] = signature[i];
  Tensor both = Tensor::empty({int64_t(2 * kFields)}, {DType::i64});
  int64_t* p = both.data_ptr<int64_t>();
  for (size_t i = 0; i < kFields; ++i) p[i] = mine[i], p[kFields + i] = -mine[i];
  all_reduce_impl(both, ReduceOp::max);
  std::ostringstream diff;
  for (size_t i = 0; i < kFields; ++i)
    if (p[i] != -p[kFields + i]) diff << "; " << kNames[i] << " from " << -p[kFields + i] << " to " << p[i];
  HMOE_CHECK(diff.str().empty(), "the ranks did not all call the same collective with agreeing arguments ",
             "(this rank: ", op, " #", sequence_, "; collective codes: 1 split, 2 all_reduce, 3 all_gather, ",
             "4 all_to_all_v, 5 broadcast, 6 barrier; dtype codes as engine/dtype.h orders them)", diff.str());
}

void Communicator::verify_counts(const AllToAllPlan& plan) {
  // Each rank sends every peer the counts it will send it; the receiver compares them
  // with what it expects, then all learn whether any rank found a difference.
  const int64_t chunks = plan.chunks;
  Tensor sent = Tensor::empty({int64_t(size_), chunks}, {DType::i64});
  Tensor got = Tensor::empty({int64_t(size_), chunks}, {DType::i64});
  std::memcpy(sent.data_ptr<int64_t>(), plan.send_rows.data(), plan.send_rows.size() * sizeof(int64_t));
  const std::vector<int64_t> ones(size_t(size_), 1);
  std::vector<int64_t> offsets(static_cast<size_t>(size_));
  detail::block_offsets(ones, size_, 1, false, offsets);
  all_to_all_v_impl({sent, got, ones, ones, offsets, offsets, 1, size_t(chunks) * sizeof(int64_t)});
  std::ostringstream diff;
  const int64_t* g = got.data_ptr<int64_t>();
  for (int64_t i = 0; i < int64_t(size_) * chunks; ++i)
    if (g[i] != plan.recv_rows[size_t(i)])
      diff << "; rank " << i / chunks << " sends " << g[i] << " rows of chunk " << i % chunks
           << " to this rank, which expects " << plan.recv_rows[size_t(i)];
  Tensor flag = Tensor::empty({1}, {DType::i64});
  flag.data_ptr<int64_t>()[0] = diff.str().empty() ? 0 : 1;
  all_reduce_impl(flag, ReduceOp::max);
  HMOE_CHECK(flag.data_ptr<int64_t>()[0] == 0, "the ranks' all_to_all_v counts do not match pairwise",
             diff.str().empty() ? std::string(" (this rank's do; another rank found the difference)") : diff.str());
}

// --- the collectives -----------------------------------------------------------------------
std::shared_ptr<Communicator> Communicator::split(int color, int key) {
  std::shared_ptr<Communicator> out;
  call("split", Device::cpu(), 0, [&] {
    if (options_.verify && size_ > 1) verify_same_call("split", {});
    out = split_impl(color, key, name_ + "/" + std::to_string(color));
  });
  return out;
}

void Communicator::all_reduce(const Tensor& t, ReduceOp op) {
  call("all_reduce", device_or_cpu(t), t.defined() ? double(t.nbytes()) : 0, [&] {
    check_contiguous(t, "the tensor");
    HMOE_CHECK(is_floating(t.dtype()) || is_integral(t.dtype()), "reduces floats and ints, not ",
               dtype_name(t.dtype()));
    if (options_.verify && size_ > 1) {
      const int64_t sig[] = {int64_t(t.dtype()), t.numel(), int64_t(op)};
      verify_same_call("all_reduce", sig);
    }
    if (t.numel() > 0) all_reduce_impl(t, op);
    t.storage()->bump_version();  // written in place: autograd's saved-tensor check sees it
  });
}

void Communicator::all_gather(const Tensor& in, const Tensor& out) {
  call("all_gather", device_or_cpu(in), in.defined() && out.defined() ? double(in.nbytes() + out.nbytes()) : 0, [&] {
    check_contiguous(in, "the input");
    check_contiguous(out, "the output");
    check_same(in, out, "the input", "the output");
    HMOE_CHECK(out.numel() == int64_t(size_) * in.numel(), "the output (", out.meta_str(),
               ") must hold size() = ", size_, " times the input's ", in.numel(), " elements");
    if (options_.verify && size_ > 1) {
      const int64_t sig[] = {int64_t(in.dtype()), in.numel()};
      verify_same_call("all_gather", sig);
    }
    if (in.numel() > 0) all_gather_impl(in, out);
    out.storage()->bump_version();
  });
}

Tensor Communicator::all_gather(const Tensor& in) {
  HMOE_CHECK(in.defined(), context("all_gather", sequence_ + 1), "the input is an undefined tensor");
  Shape shape = in.shape();
  if (shape.empty())
    shape = {int64_t(size_)};
  else
    shape[0] *= size_;
  Tensor out = Tensor::empty(shape, {in.dtype(), in.device()});
  all_gather(in, out);
  return out;
}

std::function<void()> Communicator::exchange(const Tensor& send, std::span<const int64_t> send_rows, const Tensor& recv,
                                             std::span<const int64_t> recv_rows, const ChunkLayout& layout,
                                             bool async) {
  check_contiguous(send, "the send tensor");
  check_contiguous(recv, "the receive tensor");
  check_same(send, recv, "the send tensor", "the receive tensor");
  HMOE_CHECK(same_rows(send, recv), "send and receive tensors must have rows (dim 0) of one shape (got ",
             send.meta_str(), " and ", recv.meta_str(), ")");
  HMOE_CHECK(layout.chunks >= 1, "ChunkLayout::chunks must be at least 1 (got ", layout.chunks, ")");
  const size_t n = size_t(size_) * size_t(layout.chunks);
  const int64_t sends = checked_total(send_rows, n, "send_rows"), recvs = checked_total(recv_rows, n, "recv_rows");
  HMOE_CHECK(sends == send.size(0), "send_rows add up to ", sends, " rows, but the send tensor has ", send.size(0),
             " (", send.meta_str(), ")");
  HMOE_CHECK(recvs == recv.size(0), "recv_rows add up to ", recvs, " rows, but the receive tensor has ", recv.size(0),
             " (", recv.meta_str(), ")");
  const int64_t row_elems =
      std::accumulate(send.shape().begin() + 1, send.shape().end(), int64_t(1), std::multiplies<>());
  if (options_.verify && size_ > 1) {
    const int64_t sig[] = {int64_t(send.dtype()), row_elems, layout.chunks};
    verify_same_call("all_to_all_v", sig);
  }
  offsets_.resize(2 * n);  // the send buffer's, then the receive buffer's
  const std::span<int64_t> send_off(offsets_.data(), n), recv_off(offsets_.data() + n, n);
  detail::block_offsets(send_rows, size_, layout.chunks, layout.send_chunk_major, send_off);
  detail::block_offsets(recv_rows, size_, layout.chunks, layout.recv_chunk_major, recv_off);
  const AllToAllPlan plan{send,     recv,     send_rows,     recv_rows,
                          send_off, recv_off, layout.chunks, size_t(row_elems) * send.element_size()};
  if (options_.verify && size_ > 1) verify_counts(plan);
  std::function<void()> done;
  if (plan.row_bytes > 0) {
    if (async)
      done = all_to_all_v_start_impl(plan);
    else
      all_to_all_v_impl(plan);
  }
  recv.storage()->bump_version();
  return done;
}

std::function<void()> Communicator::all_to_all_v_start_impl(const AllToAllPlan& plan) {
  all_to_all_v_impl(plan);
  return {};
}

void Communicator::all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, const Tensor& recv,
                                std::span<const int64_t> recv_rows, const ChunkLayout& layout) {
  const double bytes = send.defined() && recv.defined() ? double(send.nbytes() + recv.nbytes()) : 0;
  call("all_to_all_v", device_or_cpu(send), bytes,
       [&] { exchange(send, send_rows, recv, recv_rows, layout, /*async=*/false); });
}

PendingExchange Communicator::start_all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows,
                                                 const Tensor& recv, std::span<const int64_t> recv_rows,
                                                 const ChunkLayout& layout) {
  PendingExchange p;
  p.bytes_ = send.defined() && recv.defined() ? double(send.nbytes() + recv.nbytes()) : 0;
  p.device_ = device_or_cpu(send);
  call("all_to_all_v", p.device_, p.bytes_, [&] {
    p.finish_ = exchange(send, send_rows, recv, recv_rows, layout, /*async=*/true);
    p.seq_ = sequence_;
  });
  p.comm_ = this;
  p.send_ = send;
  p.recv_ = recv;
  in_flight_ = p.seq_;
  return p;
}

void Communicator::finish(PendingExchange& p) {
  // Cleared first: a failed completion must not leave the communicator refusing calls.
  in_flight_ = 0;
  const ProfileScope scope("all_to_all_v_wait", p.device_, 0, 0);
  // The call's own number: the watchdog then reports the exchange, not a new call.
  const WatchScope watch(watchdog_.get(), "all_to_all_v", p.seq_, p.bytes_);
  try {
    if (p.finish_) p.finish_();
  } catch (const Error& e) {
    throw Error(context("all_to_all_v", p.seq_) + e.what());
  }
}

PendingExchange& PendingExchange::operator=(PendingExchange&& o) noexcept {
  if (this != &o) {
    if (in_flight()) {
      try {
        wait();
      } catch (...) {  // a move-assignment cannot throw; the watchdog ends a job that hangs
      }
    }
    comm_ = std::exchange(o.comm_, nullptr);
    seq_ = o.seq_;
    bytes_ = o.bytes_;
    device_ = o.device_;
    finish_ = std::move(o.finish_);
    send_ = std::move(o.send_);
    recv_ = std::move(o.recv_);
  }
  return *this;
}

PendingExchange::~PendingExchange() {
  if (!in_flight()) return;
  try {
    wait();
  } catch (...) {  // a destructor cannot throw; the buffers must outlive the transfer either way
  }
}

void PendingExchange::wait() {
  if (!comm_) return;
  Communicator* c = std::exchange(comm_, nullptr);
  struct Release {
    PendingExchange* p;
    ~Release() {
      p->finish_ = nullptr;
      p->send_ = Tensor();
      p->recv_ = Tensor();
    }
  } release{this};
  c->finish(*this);
}

Tensor Communicator::all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows,
                                  std::span<const int64_t> recv_rows, const ChunkLayout& layout) {
  HMOE_CHECK(send.defined() && send.dim() >= 1, context("all_to_all_v", sequence_ + 1),
             "the send tensor must be defined with at least one dim");
  Shape shape = send.shape();
  shape[0] = 0;
  for (int64_t r : recv_rows) shape[0] += std::max<int64_t>(r, 0);
  Tensor recv = Tensor::empty(shape, {send.dtype(), send.device()});
  all_to_all_v(send, send_rows, recv, recv_rows, layout);
  return recv;
}

void Communicator::broadcast(const Tensor& t, int root) {
  call("broadcast", device_or_cpu(t), t.defined() ? double(t.nbytes()) : 0, [&] {
    check_contiguous(t, "the tensor");
    HMOE_CHECK(root >= 0 && root < size_, "root ", root, " is not a rank of this communicator (size ", size_, ")");
    if (options_.verify && size_ > 1) {
      const int64_t sig[] = {int64_t(t.dtype()), t.numel(), root};
      verify_same_call("broadcast", sig);
    }
    if (t.numel() > 0) broadcast_impl(t, root);
    t.storage()->bump_version();
  });
}

void Communicator::barrier() {
  call("barrier", Device::cpu(), 0, [&] {
    if (options_.verify && size_ > 1) verify_same_call("barrier", {});
    barrier_impl();
  });
}

void Communicator::copy_own_blocks(const AllToAllPlan& plan, int rank) {
  const char* send = static_cast<const char*>(plan.send.data_ptr<void>());
  char* recv = static_cast<char*>(plan.recv.data_ptr<void>());
  for (int c = 0; c < plan.chunks; ++c) {
    const size_t i = size_t(rank) * size_t(plan.chunks) + size_t(c);
    HMOE_CHECK(plan.send_rows[i] == plan.recv_rows[i], "this rank sends itself ", plan.send_rows[i], " rows of chunk ",
               c, " but expects ", plan.recv_rows[i]);
    detail::copy_bytes(recv + size_t(plan.recv_offsets[i]) * plan.row_bytes,
                       send + size_t(plan.send_offsets[i]) * plan.row_bytes, size_t(plan.send_rows[i]) * plan.row_bytes,
                       plan.send.device());
  }
}

// --- backend.h helpers -----------------------------------------------------------------------
namespace detail {

void block_offsets(std::span<const int64_t> rows, int size, int chunks, bool chunk_major, std::span<int64_t> out) {
  int64_t at = 0;
  for (int outer = 0; outer < (chunk_major ? chunks : size); ++outer)
    for (int inner = 0; inner < (chunk_major ? size : chunks); ++inner) {
      const size_t i =
          chunk_major ? size_t(inner) * size_t(chunks) + size_t(outer) : size_t(outer) * size_t(chunks) + size_t(inner);
      out[i] = at;
      at += rows[i];
    }
}

void copy_bytes(void* dst, const void* src, size_t nbytes, Device device) {
  if (nbytes == 0) return;
  if (device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#if defined(HMOE_WITH_CUDA_BACKEND)
  cuda::memcpy_async(dst, src, nbytes, cuda::CopyKind::device_to_device, cuda::current_stream(device.index));
#else
  HMOE_FAIL("a ", device.str(), " tensor, but this build has no CUDA backend");
#endif
}

void sync_stream(Device device) {
  if (device.is_cpu()) return;
#if defined(HMOE_WITH_CUDA_BACKEND)
  cuda::current_stream(device.index).synchronize();
#else
  HMOE_FAIL("a ", device.str(), " tensor, but this build has no CUDA backend");
#endif
}

}  // namespace detail
}  // namespace hmoe::dist
