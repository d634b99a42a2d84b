// all_to_all_v against a serial reference: count patterns with zero blocks, a rank that
// sends nothing, a rank that receives everything, large blocks; chunked layouts (the
// expert-parallel dispatch and its reverse, which must give the input back); every
// dtype, wide rows (the nested row datatype under the test knob), 1-d and 3-d rows;
// bad counts refused on every rank without a hang; started exchanges (the same rows once
// waited for; no other call while one is in flight).
#include <algorithm>
#include <string>
#include <utility>

#include "engine/profiler.h"
#include "tests/engine/dist/dist_test_util.h"

namespace hmoe::testing::dist {
namespace {

using hmoe::dist::reference::AllToAllCase;
using hmoe::dist::reference::Pattern;
namespace ref = hmoe::dist::reference;

void check_case(Communicator& comm, const AllToAllCase& k, Device dev) {
  const int me = comm.rank(), size = comm.size();
  const std::vector<int64_t> send_rows = ref::rows(k, me, size, false), recv_rows = ref::rows(k, me, size, true);
  const std::vector<double> send_v = ref::buffer(k, me, size, false), want = ref::buffer(k, me, size, true);
  const Tensor send = make(send_v, ref::buffer_shape(k, send_rows), k.dtype, dev);
  const Tensor recv = comm.all_to_all_v(send, send_rows, recv_rows, k.layout());
  const std::string what = where(dev, k.dtype) + " pattern " + std::to_string(int(k.pattern)) + ", " +
                           std::to_string(k.chunks) + " chunks, send " + (k.send_chunk_major ? "chunk" : "peer") +
                           "-major, recv " + (k.recv_chunk_major ? "chunk" : "peer") + "-major, row " +
                           shape_str(k.row) + " on " + comm.name();
  EXPECT_EQ(recv.shape(), ref::buffer_shape(k, recv_rows)) << what;
  EXPECT_EQ(recv.to_vector(), want) << what;
  // The reverse exchange (counts and layouts swapped) gives the input back.
  const Tensor back = comm.all_to_all_v(recv, recv_rows, send_rows, {k.chunks, k.recv_chunk_major, k.send_chunk_major});
  EXPECT_EQ(back.to_vector(), send_v) << what << ", reversed";
  // Started, then waited for: the same rows.
  const Tensor again = Tensor::empty(recv.shape(), {recv.dtype(), recv.device()});
  hmoe::dist::PendingExchange started = comm.start_all_to_all_v(send, send_rows, again, recv_rows, k.layout());
  EXPECT_TRUE(started.in_flight());
  started.wait();
  EXPECT_FALSE(started.in_flight());
  EXPECT_EQ(again.to_vector(), want) << what << ", started";
}

}  // namespace

void check_all_to_all_v(Communicator& c, int64_t seed) {
  const Pattern patterns[] = {Pattern::uneven, Pattern::silent_first_rank, Pattern::all_to_rank_0, Pattern::large,
                              Pattern::empty};
  for (Device dev : devices()) {
    for (Pattern p : patterns) check_case(c, {p, 1, false, false, DType::f32, {8}}, dev);
    // The expert-parallel layouts: dispatch (peer-major in, chunk-major out) and the others.
    for (int layout = 0; layout < 4; ++layout)
      for (Pattern p : {Pattern::uneven, Pattern::silent_first_rank, Pattern::all_to_rank_0})
        check_case(c, {p, 3, (layout & 1) != 0, (layout & 2) != 0, DType::f32, {4}}, dev);
    for (DType dt : all_dtypes()) check_case(c, {Pattern::uneven, 2, false, true, dt, {3}}, dev);
    // Rows wider than the test knob's 100 (nested row types: with and without a tail),
    // 1-d rows (elements) and 3-d rows.
    check_case(c, {Pattern::uneven, 1, false, false, DType::f32, {37}}, dev);
    check_case(c, {Pattern::uneven, 1, false, false, DType::f64, {50}}, dev);
    check_case(c, {Pattern::large, 1, false, false, DType::i64, {}}, dev);
    check_case(c, {Pattern::silent_first_rank, 2, true, false, DType::bf16, {2, 3}}, dev);
  }
  (void)seed;
}

TEST(Dist, AllToAllV) { check_all_to_all_v(world(), 4); }

TEST(Dist, AllToAllVRefusesBadCountsOnEveryRank) {
  Communicator& w = world();
  const int size = w.size();
  const std::vector<int64_t> ones(size_t(size), 1);
  Tensor send = Tensor::empty({int64_t(size), 2}, {DType::f32});
  send.fill_(1);
  const auto expect_error = [&](const std::function<void()>& f, const std::string& what) {
    try {
      f();
      ADD_FAILURE() << "no error: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("all_to_all_v #"), std::string::npos) << e.what();
    }
  };
  expect_error([&] { w.all_to_all_v(send, std::vector<int64_t>(size_t(size) + 1, 1), ones); }, "entries");
  std::vector<int64_t> negative = ones;
  negative[0] = -1;
  expect_error([&] { w.all_to_all_v(send, negative, ones); }, "negative");
  expect_error([&] { w.all_to_all_v(send, std::vector<int64_t>(size_t(size), 2), ones); }, "add up to");
  Tensor other = Tensor::empty({int64_t(size), 3}, {DType::f32});
  expect_error([&] { w.all_to_all_v(send, ones, other, ones); }, "rows (dim 0) of one shape");
  if (size > 1) {
    // Rank 0 expects one row more from rank 1 than rank 1 sends: Options::verify finds
    // it and every rank throws, instead of a hang or a truncated message.
    std::vector<int64_t> expect = ones;
    if (w.rank() == 0) expect[1] = 2;
    int64_t total = 0;
    for (int64_t r : expect) total += r;
    Tensor recv = Tensor::empty({total, 2}, {DType::f32});
    expect_error([&] { w.all_to_all_v(send, ones, recv, expect); }, "do not match pairwise");
  }
}

TEST(Dist, StartedAllToAllVTakesNoOtherCallUntilWaitedFor) {
  Communicator& w = world();
  const int size = w.size();
  const std::vector<int64_t> rows(size_t(size), 2);
  Tensor send =
      make(values(w.rank(), 2 * int64_t(size) * 3, DType::f64), {2 * int64_t(size), 3}, DType::f64, Device::cpu());
  Tensor recv = Tensor::empty(send.shape(), {DType::f64});
  const Tensor want = w.all_to_all_v(send, rows, rows);
  Profiler p;
  hmoe::dist::PendingExchange started = w.start_all_to_all_v(send, rows, recv, rows);
  const uint64_t seq = w.sequence();
  try {
    w.barrier();  // every rank refuses it alike, so the ranks stay in step
    ADD_FAILURE() << "a barrier while an all_to_all_v is in flight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_to_all_v #" + std::to_string(seq) + " is still in flight"),
              std::string::npos)
        << e.what();
  }
  started.wait();
  EXPECT_EQ(recv.to_vector(), want.to_vector());
  w.barrier();
  // One event for the start (with the bytes) and one for the wait.
  std::vector<std::pair<std::string, double>> got;
  for (const ProfileEvent& e : p.events()) got.emplace_back(e.name, e.bytes);
  const std::vector<std::pair<std::string, double>> expected{{"all_to_all_v", double(send.nbytes() + recv.nbytes())},
                                                             {"barrier", 0.0},
                                                             {"all_to_all_v_wait", 0.0},
                                                             {"barrier", 0.0}};
  EXPECT_EQ(got, expected);
  // A pending exchange destroyed unwaited completes first.
  { hmoe::dist::PendingExchange dropped = w.start_all_to_all_v(send, rows, recv, rows); }
  EXPECT_EQ(recv.to_vector(), want.to_vector());
  w.barrier();
}

}  // namespace hmoe::testing::dist
