// Internal seam between the communicator's shared code (communicator.cpp,
// environment.cpp) and its backends: their factories, and the helpers every backend
// uses (copies within a device, stream synchronisation, all_to_all_v's block layout).
// Not for use outside engine/dist.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/dist/communicator.h"

namespace hmoe::dist::detail {

std::shared_ptr<Communicator> make_single_world(const Options& options);

#if defined(HMOE_WITH_MPI)
// Initialises MPI (or adopts an MPI someone else initialised) for the world's lifetime.
std::shared_ptr<Communicator> make_mpi_world(const Options& options);
// MPI_Abort on MPI_COMM_WORLD: ends every rank.
[[noreturn]] void mpi_abort(int code);
#endif
#if defined(HMOE_WITH_NCCL)
std::shared_ptr<Communicator> make_nccl_world(const Options& options);
#endif

// Copies nbytes between two buffers on one device (cuda: queued on the current stream).
void copy_bytes(void* dst, const void* src, size_t nbytes, Device device);
// Waits for the work queued on the current stream of a cuda device (nothing for the CPU).
void sync_stream(Device device);

// The offsets (in rows) of all_to_all_v's blocks in a buffer laid out peer-major or
// chunk-major, indexed [peer * chunks + chunk] like the counts, written to out.
void block_offsets(std::span<const int64_t> rows, int size, int chunks, bool chunk_major, std::span<int64_t> out);

}  // namespace hmoe::dist::detail
