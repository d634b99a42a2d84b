// How a model is spread over processes. Every rank is a data-parallel rank holding its
// own equal part of the global batch (rank r: rows [r * local, (r + 1) * local)). The
// world is cut into expert-parallel groups of `ep` consecutive ranks; the ranks of one
// group share the experts of every MoE layer, each holding a contiguous block by global
// expert id. The ranks holding the same block (one per expert-parallel group) form its
// expert-data-parallel group, over which those experts' gradients are summed.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/dist/communicator.h"
#include "models/nn/module.h"

namespace hmoe::nn {

struct Parallel {
  std::shared_ptr<dist::Communicator> world;  // null: one process, and so the others
  std::shared_ptr<dist::Communicator> ep;     // the ranks sharing the experts (size ep)
  std::shared_ptr<dist::Communicator> edp;    // the ranks holding the same experts (size world / ep)

  // Splits world (collective over it): ep must divide world.size().
  static Parallel make(const std::shared_ptr<dist::Communicator>& world, int64_t ep);

  int world_size() const { return world ? world->size() : 1; }
  int world_rank() const { return world ? world->rank() : 0; }
  int ep_size() const { return ep ? ep->size() : 1; }
  int ep_rank() const { return ep ? ep->rank() : 0; }
  bool experts_sharded() const { return ep_size() > 1; }

  // This rank's block of n experts (ep_size() divides n).
  RowShard experts(int64_t n) const { return {n / ep_size() * ep_rank(), n}; }
  int64_t local_experts(int64_t n) const { return n / ep_size(); }
};

}  // namespace hmoe::nn
