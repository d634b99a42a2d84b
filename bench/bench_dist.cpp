// The communicator's overhead: all-to-all-v and all-reduce through dist::Communicator
// (the MPI backend, watchdog on, verify off) against raw MPI_Alltoallv / MPI_Allreduce
// on the same buffers, 4 KB to 64 MB per rank; prints bandwidth (bytes each rank sends,
// or reduces, per second) and the ratio ours / raw. Run under mpirun, e.g.
//   mpirun -np 2 build/bench/bench_dist [--max-bytes=67108864] [--rounds=5]
// The two sides alternate in rounds; each side's figure is its best round's median.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "hmoe.h"

namespace {

using Clock = std::chrono::steady_clock;

// Seconds per call: `reps` calls back to back are one sample, timed on the slowest rank
// after a barrier; the median of `samples` samples, best of `rounds` rounds that
// alternate between the two functions.
std::pair<double, double> time_pair(MPI_Comm comm, int rounds, int samples, int reps, const std::function<void()>& a,
                                    const std::function<void()>& b) {
  const auto median_of = [&](const std::function<void()>& f) {
    std::vector<double> t;
    for (int i = 0; i < samples; ++i) {
      MPI_Barrier(comm);
      const auto start = Clock::now();
      for (int r = 0; r < reps; ++r) f();
      double s = std::chrono::duration<double>(Clock::now() - start).count() / reps;
      MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, comm);
      t.push_back(s);
    }
    std::nth_element(t.begin(), t.begin() + ptrdiff_t(t.size() / 2), t.end());
    return t[t.size() / 2];
  };
  a();  // warm-up: first-touch pages, connections
  b();
  double best_a = 1e30, best_b = 1e30;
  for (int r = 0; r < rounds; ++r) {
    best_a = std::min(best_a, median_of(a));
    best_b = std::min(best_b, median_of(b));
  }
  return {best_a, best_b};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hmoe;
  int64_t max_bytes = int64_t(64) << 20;
  int rounds = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--max-bytes=", 12) == 0) max_bytes = std::atoll(argv[i] + 12);
    if (std::strncmp(argv[i], "--rounds=", 9) == 0) rounds = std::atoi(argv[i] + 9);
  }
  dist::Options options;
  options.backend = dist::Backend::mpi;
  dist::Environment env(options);
  dist::Communicator& comm = env.world();
  const int size = comm.size(), rank = comm.rank();
  MPI_Comm raw = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw);
  if (rank == 0) {
    std::printf(
        "bench_dist: %d ranks, backend %s; GB/s = bytes each rank sends (all-to-all-v) or reduces "
        "(all-reduce, f32 sum) per second\n",
        size, std::string(dist::backend_name(comm.backend())).c_str());
    std::printf("%10s | %10s %10s %6s | %10s %10s %6s\n", "bytes", "a2av ours", "a2av MPI", "ratio", "allred ours",
                "allred MPI", "ratio");
  }
  constexpr int64_t kRowBytes = 256;  // 64 f32 per row; counts are rows
  for (int64_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    // About 1 MB per sample (at least one call), 15 samples per round.
    const int reps = int(std::max<int64_t>(1, (int64_t(1) << 20) / bytes)), samples = 15;
    // all-to-all-v: each rank sends bytes / size to every rank (itself included).
    const int64_t rows_per_peer = std::max<int64_t>(1, bytes / kRowBytes / size);
    const std::vector<int64_t> rows(size_t(size), rows_per_peer);
    Tensor send = full({rows_per_peer * size, kRowBytes / 4}, double(rank), {DType::f32});
    Tensor recv = Tensor::empty(send.shape(), {DType::f32});
    const int count = int(rows_per_peer * kRowBytes);
    std::vector<int> counts(static_cast<size_t>(size), count), displs(static_cast<size_t>(size));
    for (int p = 0; p < size; ++p) displs[size_t(p)] = p * count;
    const auto [a2a_ours, a2a_raw] = time_pair(
        raw, rounds, samples, reps, [&] { comm.all_to_all_v(send, rows, recv, rows); },
        [&] {
          MPI_Alltoallv(send.data_ptr<void>(), counts.data(), displs.data(), MPI_BYTE, recv.data_ptr<void>(),
                        counts.data(), displs.data(), MPI_BYTE, raw);
        });
    // all-reduce: bytes of f32, in place.
    Tensor t = full({bytes / 4}, 1.0, {DType::f32});
    const auto [ar_ours, ar_raw] = time_pair(
        raw, rounds, samples, reps, [&] { comm.all_reduce(t); },
        [&] { MPI_Allreduce(MPI_IN_PLACE, t.data_ptr<void>(), int(bytes / 4), MPI_FLOAT, MPI_SUM, raw); });
    const double sent = double(rows_per_peer * kRowBytes * size);
    if (rank == 0)
      std::printf("%10lld | %10.3f %10.3f %6.3f | %10.3f %10.3f %6.3f\n", static_cast<long long>(bytes),
                  sent / a2a_ours / 1e9, sent / a2a_raw / 1e9, a2a_raw / a2a_ours, double(bytes) / ar_ours / 1e9,
                  double(bytes) / ar_raw / 1e9, ar_raw / ar_ours);
  }
  MPI_Comm_free(&raw);
  return 0;
}
