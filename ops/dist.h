/// @file
/// Differentiable collectives for data- and expert-parallel models: the row exchange of
/// the expert-parallel MoE layer (an all-to-all-v whose backward is the exchange with the
/// counts and layouts swapped; blocking, or started and waited for in two halves) and the
/// sum over ranks of a statistic (an all-reduce whose backward is the all-reduce of the
/// gradients). Every rank of the communicator must call them in the same order, and so
/// must their backward passes (the autograd engine runs a graph of the same shape in the
/// same order on every rank).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/tensor.h"

namespace hmoe::dist {

/// Rows of x sent as comm.all_to_all_v does (send_rows / recv_rows indexed [peer * chunks
/// + chunk], buffers laid out as `layout` says); the result holds the received rows.
Tensor exchange_rows(const std::shared_ptr<Communicator>& comm, const Tensor& x, std::vector<int64_t> send_rows,
                     std::vector<int64_t> recv_rows, const ChunkLayout& layout);

/// exchange_rows in two halves, so that the work between them overlaps the transfer:
/// the constructor starts the exchange (Communicator::start_all_to_all_v), wait() returns
/// the received rows. Backward mirrors it with two autograd nodes: the one recorded by
/// wait() starts the reverse exchange, the constructor's waits for it, and since the
/// engine runs the latest-created ready node first, the backward of the ops recorded
/// between the two halves runs while the gradients are in flight. Nothing else may use
/// comm between the halves (forward or backward).
class RowExchange {
 public:
  /// Starts the exchange of x's rows, the arguments as exchange_rows takes them.
  RowExchange(const std::shared_ptr<Communicator>& comm, const Tensor& x, std::vector<int64_t> send_rows,
              std::vector<int64_t> recv_rows, const ChunkLayout& layout);
  /// The received rows (once; later calls return them again).
  Tensor wait();

 private:
  struct State;
  std::shared_ptr<State> state_;
  Tensor link_;  // the first node's output, the second's input: it orders their backward
  Tensor rows_;
};

/// The element-wise sum of t over the ranks of comm (each rank's t has one shape). The
/// gradient of each rank's t is the sum over ranks of the result's gradients: with a
/// loss that every rank forms from the summed statistic, and gradients averaged over the
/// ranks afterwards, that is the single-process gradient.
Tensor sum_over_ranks(const std::shared_ptr<Communicator>& comm, const Tensor& t);

}  // namespace hmoe::dist
