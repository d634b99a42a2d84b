// The expert-parallel and expert-data-parallel groups of a world.
#include "models/nn/parallel.h"

#include "engine/error.h"

namespace hmoe::nn {

Parallel Parallel::make(const std::shared_ptr<dist::Communicator>& world, int64_t ep) {
  HMOE_CHECK(world != nullptr, "parallel layout: no world communicator");
  const int w = world->size(), r = world->rank();
  HMOE_CHECK(ep >= 1 && w % ep == 0, "parallel layout: dist.ep = ", ep, " must divide the world size ", w);
  Parallel p;
  p.world = world;
  // Consecutive ranks share experts (on one node where ranks fill nodes in order, so the
  // token exchange stays on the fast links); ranks at the same place in their groups
  // hold the same experts.
  p.ep = world->split(int(r / ep), r);
  p.edp = world->split(int(r % ep), r);
  return p;
}

}  // namespace hmoe::nn
