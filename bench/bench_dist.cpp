// The communicator's overhead: all-to-all-v and all-reduce through dist::Communicator
// (the MPI backend, watchdog on, verify off) against raw MPI_Alltoallv / MPI_Allreduce
// on the same buffers, 4 KB to 64 MB per rank; prints bandwidth (bytes each rank sends,
// or reduces, per second) and the ratio ours / raw. Run under mpirun, e.g.
//   mpirun -np 2 build/bench/bench_dist [--max-bytes=67108864] [--samples=41]
// The two sides are sampled in alternating pairs; figures are medians over the samples.
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

struct Timing {
  double a, b;   // median seconds per call
  double ratio;  // median over samples of b's time / a's time
};

// One sample: `reps` calls back to back after a barrier, the slowest rank's time per call.
double sample(MPI_Comm comm, int reps, const std::function<void()>& f) {
  MPI_Barrier(comm);
  const auto start = Clock::now();
  for (int r = 0; r < reps; ++r) f();
  double s = std::chrono::duration<double>(Clock::now() - start).count() / reps;
  MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, comm);
  return s;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + ptrdiff_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// The two functions sampled in pairs (alternating which goes first), so that a shared
// machine's drift hits both alike; medians of each and of the pairs' ratios.
Timing time_pair(MPI_Comm comm, int samples, int reps, const std::function<void()>& a, const std::function<void()>& b) {
  a();  // warm-up: first-touch pages, connections
  b();
  std::vector<double> ta, tb, ratio;
  for (int i = 0; i < samples; ++i) {
    const double first = sample(comm, reps, i % 2 ? b : a), second = sample(comm, reps, i % 2 ? a : b);
    ta.push_back(i % 2 ? second : first);
    tb.push_back(i % 2 ? first : second);
    ratio.push_back(tb.back() / ta.back());
  }
  return {median(ta), median(tb), median(ratio)};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hmoe;
  int64_t max_bytes = int64_t(64) << 20;
  int samples = 41;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--max-bytes=", 12) == 0) max_bytes = std::atoll(argv[i] + 12);
    if (std::strncmp(argv[i], "--samples=", 10) == 0) samples = std::max(1, std::atoi(argv[i] + 10));
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
    // About 1 MB per sample (at least one call).
    const int reps = int(std::max<int64_t>(1, (int64_t(1) << 20) / bytes));
    // all-to-all-v: each rank sends bytes / size to every rank (itself included).
    const int64_t rows_per_peer = std::max<int64_t>(1, bytes / kRowBytes / size);
    const std::vector<int64_t> rows(size_t(size), rows_per_peer);
    Tensor send = full({rows_per_peer * size, kRowBytes / 4}, double(rank), {DType::f32});
    Tensor recv = Tensor::empty(send.shape(), {DType::f32});
    const int count = int(rows_per_peer * kRowBytes);
    std::vector<int> counts(static_cast<size_t>(size), count), displs(static_cast<size_t>(size));
    for (int p = 0; p < size; ++p) displs[size_t(p)] = p * count;
    const Timing a2a = time_pair(
        raw, samples, reps, [&] { comm.all_to_all_v(send, rows, recv, rows); },
        [&] {
          MPI_Alltoallv(send.data_ptr<void>(), counts.data(), displs.data(), MPI_BYTE, recv.data_ptr<void>(),
                        counts.data(), displs.data(), MPI_BYTE, raw);
        });
    // all-reduce: bytes of f32, in place.
    Tensor t = full({bytes / 4}, 1.0, {DType::f32});
    const Timing ar = time_pair(
        raw, samples, reps, [&] { comm.all_reduce(t); },
        [&] { MPI_Allreduce(MPI_IN_PLACE, t.data_ptr<void>(), int(bytes / 4), MPI_FLOAT, MPI_SUM, raw); });
    const double sent = double(rows_per_peer * kRowBytes * size);
    if (rank == 0)
      std::printf("%10lld | %10.3f %10.3f %6.3f | %10.3f %10.3f %6.3f\n", static_cast<long long>(bytes),
                  sent / a2a.a / 1e9, sent / a2a.b / 1e9, a2a.ratio, double(bytes) / ar.a / 1e9,
                  double(bytes) / ar.b / 1e9, ar.ratio);
  }
  MPI_Comm_free(&raw);
  return 0;
}
