/// @file
/// How a model is spread over processes. Every rank is a data-parallel rank holding its
/// own equal part of the global batch (rank r: rows [r * local, (r + 1) * local)). The
/// world is cut into expert-parallel groups of `ep` consecutive ranks; the ranks of one
/// group share the experts of every MoE layer, each holding a contiguous block by global
/// expert id. The ranks holding the same block (one per expert-parallel group) form its
/// expert-data-parallel group, over which those experts' gradients are summed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/dist/communicator.h"
#include "models/nn/module.h"

namespace hmoe::nn {

/// The communicators of a model spread over processes (see the file's description).
struct Parallel {
  std::shared_ptr<dist::Communicator> world;  ///< null: one process, and so the others
  std::shared_ptr<dist::Communicator> ep;     ///< the ranks sharing the experts (size ep)
  std::shared_ptr<dist::Communicator> edp;    ///< the ranks holding the same experts (size world / ep)

  /// Splits world (collective over it): ep must divide world.size().
  static Parallel make(const std::shared_ptr<dist::Communicator>& world, int64_t ep);

  /// Processes in the world (1 for one process).
  int world_size() const { return world ? world->size() : 1; }
  /// This process's rank in the world.
  int world_rank() const { return world ? world->rank() : 0; }
  /// Ranks sharing the experts (1 when they are not sharded).
  int ep_size() const { return ep ? ep->size() : 1; }
  /// This process's rank among them.
  int ep_rank() const { return ep ? ep->rank() : 0; }
  /// Whether each rank holds only a block of the experts.
  bool experts_sharded() const { return ep_size() > 1; }

  /// This rank's block of n experts (ep_size() divides n).
  RowShard experts(int64_t n) const { return {n / ep_size() * ep_rank(), n / ep_size(), n}; }
  /// Experts of n this rank holds.
  int64_t local_experts(int64_t n) const { return n / ep_size(); }
};

/// After every rank's backward: each gradient summed over the ranks holding its parameter
/// (the world for replicated ones, the expert-data-parallel group for expert shards) and
/// divided by the world size. With each rank's loss the mean over its equal part of the
/// batch, that is the gradient one process gets on the whole batch. Undefined gradients
/// take part as zeros (every rank must send the same buffers). Buckets of at most
/// bucket_bytes per collective. Nothing to do in one process.
void average_gradients(const Module& m, const Parallel& par, size_t bucket_bytes = size_t(64) << 20);

/// Global-norm clipping over every rank's parameters (replicated gradients counted once,
/// expert shards summed over their expert-parallel group): scales the gradients so that
/// the norm of the whole model's gradient is at most max_norm; returns it before
/// clipping. The same on every rank, and equal to one process's clip_grad_norm_.
double clip_grad_norm(const Module& m, const Parallel& par, double max_norm);

/// The whole model's state from every rank's parts: each sharded entry (keyed as
/// parameter_shards() keys it) gathered in rank order over the expert-parallel group into
/// its whole tensor; the others as they are. Collective over par.ep; every rank gets all.
std::vector<std::pair<std::string, Tensor>> gather_shards(const std::vector<std::pair<std::string, Tensor>>& local,
                                                          const std::map<std::string, RowShard>& shards,
                                                          const Parallel& par);
/// This rank's part of a whole model's state: each sharded entry's rows of this rank.
std::map<std::string, Tensor> slice_shards(const std::map<std::string, Tensor>& whole,
                                           const std::map<std::string, RowShard>& shards);

}  // namespace hmoe::nn
