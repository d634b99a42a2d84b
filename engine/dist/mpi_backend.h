// The MPI backend: blocking MPI collectives on a communicator of its own, for CPU
// tensors and emulated-device tensors (whose memory is host memory), watched by the
// watchdog (MPI_Abort on a timeout). The nccl backend derives from it for its host
// side (CPU tensors, barrier, the unique id's broadcast). Internal to engine/dist.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/mpi_util.h"
#include "engine/dist/watchdog.h"

namespace hmoe::dist {

class MpiCommunicator : public Communicator {
 public:
  // Takes ownership of comm (a duplicate or a split, never MPI_COMM_WORLD itself).
  // watch: start the MPI watchdog now (a derived backend starts its own instead).
  MpiCommunicator(Backend backend, std::shared_ptr<mpi::Runtime> runtime, MPI_Comm comm, std::string name,
                  const Options& options, bool watch);
  ~MpiCommunicator() override;

 protected:
  std::shared_ptr<Communicator> split_impl(int color, int key, const std::string& name) override;
  void all_reduce_impl(const Tensor& t, ReduceOp op) override;
  void all_gather_impl(const Tensor& in, const Tensor& out) override;
  void all_to_all_v_impl(const AllToAllPlan& plan) override;
  // Posted non-blocking; the returned completion waits for the messages.
  std::function<void()> all_to_all_v_start_impl(const AllToAllPlan& plan) override;
  void broadcast_impl(const Tensor& t, int root) override;
  void barrier_impl() override;

  // The MPI communicator of a split of this group (MPI_COMM_NULL for a negative color).
  MPI_Comm split_mpi(int color, int key);
  // A CPU or emulated-device tensor's data, after the work queued on its stream.
  void* host_data(const Tensor& t) const;
  // What the MPI watchdog does: nothing to poll or abort but the job itself.
  static WatchdogActions mpi_actions();
  const mpi::Comm& host() const { return comm_; }
  // The datatype of a row of row_bytes bytes, made once per size (making and freeing one
  // per call costs more than a small message).
  MPI_Datatype row_type(size_t row_bytes);
  const std::shared_ptr<mpi::Runtime>& runtime() const { return runtime_; }

 private:
  std::shared_ptr<mpi::Runtime> runtime_;  // outlives comm_ and ops_ (declared first)
  mpi::ReduceOps ops_;
  mpi::Comm comm_;
  mpi::Exchange exchange_{comm_};
  std::vector<std::pair<size_t, mpi::Datatype>> row_types_;  // the most recent last

  // Posts all_to_all_v's messages on exchange_ and copies this rank's own blocks.
  void post_exchange(const AllToAllPlan& plan);
};

}  // namespace hmoe::dist
