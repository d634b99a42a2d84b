// all_reduce, all_gather, broadcast and barrier against serial references on every
// device and dtype, with empty, single-element and large tensors; sequence numbers, the
// profiler's events, and errors that name the rank and the collective.
#include <algorithm>
#include <string>

#include "engine/profiler.h"
#include "tests/engine/dist/dist_test_util.h"

namespace hmoe::testing::dist {
namespace {

using hmoe::dist::ReduceOp;

// Sizes: empty, one element, an odd size, and one past the test knob's pieces
// (HMOE_DIST_MAX_COUNT) many times over.
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s{{0}, {1}, {3, 5}, {4, 2, 3}, {20011}};
  return s;
}

}  // namespace

void check_all_reduce(Communicator& c, int64_t seed) {
  for (Device dev : devices())
    for (DType dt : reducible_dtypes())
      for (const Shape& shape : shapes())
        for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
          const int64_t n = shape_numel(shape);
          Tensor t = make(values(c.rank(), n, dt, seed), shape, dt, dev);
          c.all_reduce(t, op);
          const std::vector<double> want = hmoe::dist::reference::all_reduce(c.size(), n, dt, seed, op);
          EXPECT_EQ(t.shape(), shape);
          EXPECT_EQ(t.to_vector(), want) << where(dev, dt) << " " << shape_str(shape)
                                         << (op == ReduceOp::sum ? " sum" : " max") << " on " << c.name();
        }
}

void check_all_gather(Communicator& c, int64_t seed) {
  const std::vector<Shape> gather_shapes{{}, {0}, {1}, {3, 5}, {2, 1, 3}, {5003, 3}};
  for (Device dev : devices())
    for (DType dt : all_dtypes())
      for (const Shape& shape : gather_shapes) {
        const int64_t n = shape_numel(shape);
        Tensor in = make(values(c.rank(), n, dt, seed), shape, dt, dev);
        Tensor out = c.all_gather(in);
        Shape want_shape = shape.empty() ? Shape{int64_t(c.size())} : shape;
        if (!shape.empty()) want_shape[0] *= c.size();
        const std::vector<double> want = hmoe::dist::reference::all_gather(c.size(), n, dt, seed);
        EXPECT_EQ(out.shape(), want_shape) << where(dev, dt);
        EXPECT_EQ(out.to_vector(), want) << where(dev, dt) << " " << shape_str(shape) << " on " << c.name();
        // Into a given output of another shape with the same number of elements.
        Tensor flat = Tensor::empty({int64_t(c.size()) * n}, {dt, dev});
        c.all_gather(in, flat);
        EXPECT_EQ(flat.to_vector(), want) << where(dev, dt) << " into a flat output";
      }
}

void check_broadcast(Communicator& c, int64_t seed) {
  for (Device dev : devices())
    for (DType dt : all_dtypes())
      for (const Shape& shape : shapes())
        for (int root = 0; root < c.size(); ++root) {
          const int64_t n = shape_numel(shape);
          Tensor t = make(values(c.rank(), n, dt, seed + root), shape, dt, dev);
          c.broadcast(t, root);
          EXPECT_EQ(t.to_vector(), values(root, n, dt, seed + root))
              << where(dev, dt) << " " << shape_str(shape) << " from root " << root << " on " << c.name();
        }
}

TEST(Dist, World) {
  Communicator& w = world();
  EXPECT_EQ(w.name(), "world");
  EXPECT_GE(w.rank(), 0);
  EXPECT_LT(w.rank(), w.size());
  EXPECT_EQ(w.world_rank(), w.rank());
  if (const char* n = std::getenv("OMPI_COMM_WORLD_SIZE")) {
    EXPECT_EQ(w.size(), std::atoi(n));
  } else {
    EXPECT_EQ(w.size(), 1);
  }
}

TEST(Dist, AllReduce) { check_all_reduce(world(), 1); }
TEST(Dist, AllGather) { check_all_gather(world(), 2); }
TEST(Dist, Broadcast) { check_broadcast(world(), 3); }

TEST(Dist, BarrierAndSequenceNumbers) {
  Communicator& w = world();
  const uint64_t s = w.sequence();
  w.barrier();
  EXPECT_EQ(w.sequence(), s + 1);
  Tensor t = make(values(w.rank(), 4, DType::f32), {4}, DType::f32, Device::cpu());
  w.all_reduce(t);
  EXPECT_EQ(w.sequence(), s + 2);
  // A refused call is numbered too (every rank refuses it alike).
  EXPECT_THROW(w.all_reduce(Tensor::empty({2}, {DType::b8})), Error);
  EXPECT_EQ(w.sequence(), s + 3);
}

TEST(Dist, WrittenTensorsHaveTheirVersionBumped) {
  // Autograd refuses a saved tensor modified in place; a collective's writes count.
  Communicator& w = world();
  Tensor t = make(values(w.rank(), 6, DType::f32), {6}, DType::f32, Device::cpu());
  uint64_t v = t.storage()->version();
  w.all_reduce(t);
  EXPECT_GT(t.storage()->version(), v);
  v = t.storage()->version();
  w.broadcast(t, 0);
  EXPECT_GT(t.storage()->version(), v);
  Tensor out = Tensor::empty({6 * int64_t(w.size())}, {DType::f32});
  v = out.storage()->version();
  w.all_gather(t, out);
  EXPECT_GT(out.storage()->version(), v);
  const std::vector<int64_t> none(size_t(w.size()), 0);
  Tensor empty = Tensor::empty({0, 3}, {DType::f32});
  v = empty.storage()->version();
  w.all_to_all_v(empty, none, empty.clone(), none);
  EXPECT_EQ(empty.storage()->version(), v);  // the send side is only read
}

TEST(Dist, ErrorsNameTheRankTheGroupAndTheCall) {
  Communicator& w = world();
  const std::string who = "rank " + std::to_string(w.rank()) + " of " + std::to_string(w.size()) + " in world";
  const auto expect_error = [&](const std::function<void()>& f, const std::string& call, const std::string& what) {
    try {
      f();
      ADD_FAILURE() << "no error for " << call;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(who), std::string::npos) << m;
      EXPECT_NE(m.find(call + " #" + std::to_string(w.sequence())), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
      EXPECT_NE(m.find(std::string(hmoe::dist::backend_name(w.backend()))), std::string::npos) << m;
    }
  };
  Tensor square = Tensor::empty({3, 3}, {DType::f32});
  square.fill_(1);
  expect_error([&] { w.all_reduce(Tensor::empty({2}, {DType::b8})); }, "all_reduce", "not bool");
  expect_error([&] { w.all_reduce(square.t()); }, "all_reduce", "contiguous");
  expect_error([&] { w.all_gather(square, Tensor::empty({1}, {DType::f32})); }, "all_gather", "must hold");
  expect_error([&] { w.all_gather(square, Tensor::empty({9 * int64_t(w.size())}, {DType::f64})); }, "all_gather",
               "one dtype");
  expect_error([&] { w.broadcast(square, w.size()); }, "broadcast", "not a rank");
  expect_error([&] { w.broadcast(Tensor(), 0); }, "broadcast", "undefined");
}

TEST(Dist, ProfilerRecordsEachCollectiveWithItsBytes) {
  Communicator& w = world();
  Tensor t = make(values(w.rank(), 256, DType::f32), {256}, DType::f32, Device::cpu());
  Profiler p;
  w.all_reduce(t);
  const std::vector<int64_t> rows(size_t(w.size()), 2);
  Tensor send = make(values(w.rank(), 2 * int64_t(w.size()) * 3, DType::f64), {2 * int64_t(w.size()), 3}, DType::f64,
                     Device::cpu());
  Tensor recv = w.all_to_all_v(send, rows, rows);
  w.barrier();
  std::vector<std::pair<std::string, double>> got;
  for (const ProfileEvent& e : p.events()) got.emplace_back(e.name, e.bytes);
  const std::vector<std::pair<std::string, double>> want{
      {"all_reduce", 1024.0}, {"all_to_all_v", double(send.nbytes() + recv.nbytes())}, {"barrier", 0.0}};
  EXPECT_EQ(got, want);
  EXPECT_NE(p.summary().find("all_to_all_v"), std::string::npos);
}

#if defined(HMOE_WITH_CUDA_BACKEND)
TEST(Dist, DeviceCollectivesFollowTheCurrentStream) {
  if (devices().size() < 2) GTEST_SKIP() << "this backend takes no cuda tensors here";
  Communicator& w = world();
  cuda::Stream side(0);
  const cuda::StreamGuard guard(side);
  // Produced on the side stream, reduced on it, read after it.
  Tensor t = make(values(w.rank(), 1000, DType::f32), {1000}, DType::f32, Device::cuda(0));
  t.fill_(1.0);
  w.all_reduce(t);
  side.synchronize();
  EXPECT_EQ(t.to_vector(), std::vector<double>(1000, double(w.size())));
}
#endif

}  // namespace hmoe::testing::dist
