/// @file
/// Differentiable collectives for data- and expert-parallel models: the row exchange of
/// the expert-parallel MoE layer (an all-to-all-v whose backward is the exchange with the
/// counts and layouts swapped) and the sum over ranks of a statistic (an all-reduce whose
/// backward is the all-reduce of the gradients). Every rank of the communicator must call
/// them in the same order, and so must their backward passes (the autograd engine runs a
/// graph of the same shape in the same order on every rank).
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

/// The element-wise sum of t over the ranks of comm (each rank's t has one shape). The
/// gradient of each rank's t is the sum over ranks of the result's gradients: with a
/// loss that every rank forms from the summed statistic, and gradients averaged over the
/// ranks afterwards, that is the single-process gradient.
Tensor sum_over_ranks(const std::shared_ptr<Communicator>& comm, const Tensor& t);

}  // namespace hmoe::dist
