// Sub-groups made by split (by parity, in reverse key order, one rank left out, nested)
// running every collective against the serial reference; Options::verify refusing
// ranks that call different collectives; the backend names and the factory's choice.
#include <string>

#include "tests/engine/dist/dist_test_util.h"

namespace hmoe::testing::dist {
namespace {

using hmoe::dist::Backend;

void check_everything(Communicator& c, int64_t seed) {
  check_all_reduce(c, seed);
  check_all_gather(c, seed);
  check_broadcast(c, seed);
  check_all_to_all_v(c, seed);
  c.barrier();
}

}  // namespace

TEST(Dist, SplitByParity) {
  Communicator& w = world();
  const auto sub = w.split(w.rank() % 2, w.rank());
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), (w.size() + 1 - w.rank() % 2) / 2);
  EXPECT_EQ(sub->rank(), w.rank() / 2);
  EXPECT_EQ(sub->name(), "world/" + std::to_string(w.rank() % 2));
  EXPECT_EQ(sub->world_rank(), w.rank());
  EXPECT_EQ(sub->backend(), w.backend());
  EXPECT_EQ(sub->sequence(), 0u);
  check_everything(*sub, 5);
}

TEST(Dist, SplitOrdersByKeyAndLeavesOutNegativeColors) {
  Communicator& w = world();
  const auto reversed = w.split(0, -w.rank());
  ASSERT_NE(reversed, nullptr);
  EXPECT_EQ(reversed->rank(), w.size() - 1 - w.rank());
  check_everything(*reversed, 6);
  // World rank 0 joins no group; the others form one.
  const auto rest = w.split(w.rank() == 0 ? -1 : 7, w.rank());
  if (w.rank() == 0) {
    EXPECT_EQ(rest, nullptr);
  } else {
    ASSERT_NE(rest, nullptr);
    EXPECT_EQ(rest->size(), w.size() - 1);
    EXPECT_EQ(rest->rank(), w.rank() - 1);
    check_everything(*rest, 7);
    // Nested: a split of a split.
    const auto pairs = rest->split(rest->rank() / 2, rest->rank());
    ASSERT_NE(pairs, nullptr);
    EXPECT_EQ(pairs->name(), "world/7/" + std::to_string(rest->rank() / 2));
    check_all_reduce(*pairs, 8);
    check_all_to_all_v(*pairs, 8);
  }
  w.barrier();
}

TEST(Dist, VerifyRefusesRanksInDifferentCollectives) {
  Communicator& w = world();
  if (w.size() < 2) GTEST_SKIP() << "needs two ranks";
  Tensor t = Tensor::empty({3}, {DType::f32});
  t.fill_(1);
  try {
    if (w.rank() == 0)
      w.all_reduce(t);
    else
      w.broadcast(t, 0);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("did not all call the same collective"), std::string::npos) << m;
    EXPECT_NE(m.find("collective from 2 to 5"), std::string::npos) << m;
  }
  // The group is still usable: the check ran before any data moved.
  check_all_reduce(w, 9);
}

TEST(Dist, BackendNames) {
  for (Backend b : {Backend::automatic, Backend::single, Backend::mpi, Backend::nccl})
    EXPECT_EQ(hmoe::dist::parse_backend(hmoe::dist::backend_name(b)), b);
  EXPECT_THROW(hmoe::dist::parse_backend("gloo"), Error);
  EXPECT_TRUE(hmoe::dist::backend_built(Backend::single));
  EXPECT_TRUE(hmoe::dist::backend_built(world().backend()));
  if (!hmoe::dist::launched_by_mpi()) {
    EXPECT_EQ(world().backend(), Backend::single);
  }
}

}  // namespace hmoe::testing::dist
