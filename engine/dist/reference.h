// Serial references for the collectives: deterministic per-rank data (small integers, so
// sums are exact in every dtype) and what each collective must leave on a rank, computed
// by every rank alone. Shared by the communicator's tests and `hmoe selftest --dist`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "engine/dist/communicator.h"

namespace hmoe::dist::reference {

// Element i of rank r's data (seed tells uses apart): integers in [-8, 8], exact in
// every dtype even summed over a few ranks; 0 or 1 for bool.
inline double value(int r, int64_t i, DType dt, int64_t seed = 0) {
  const int64_t h = (int64_t(r) * 7 + i * 3 + seed * 11) % 17;
  return dt == DType::b8 ? double(h % 2) : double(h - 8);
}

inline std::vector<double> values(int r, int64_t n, DType dt, int64_t seed = 0) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = value(r, i, dt, seed);
  return v;
}

// all_reduce over `size` ranks of values(r, n, dt, seed).
inline std::vector<double> all_reduce(int size, int64_t n, DType dt, int64_t seed, ReduceOp op) {
  std::vector<double> want(size_t(n), op == ReduceOp::sum ? 0.0 : -1e300);
  for (int r = 0; r < size; ++r)
    for (int64_t i = 0; i < n; ++i) {
      const double v = value(r, i, dt, seed);
      want[size_t(i)] = op == ReduceOp::sum ? want[size_t(i)] + v : std::max(want[size_t(i)], v);
    }
  return want;
}

// all_gather over `size` ranks of values(r, n, dt, seed): every rank's in rank order.
inline std::vector<double> all_gather(int size, int64_t n, DType dt, int64_t seed) {
  std::vector<double> want;
  for (int r = 0; r < size; ++r) {
    const std::vector<double> v = values(r, n, dt, seed);
    want.insert(want.end(), v.begin(), v.end());
  }
  return want;
}

// all_to_all_v's count patterns: uneven with zero blocks, the first rank sending nothing
// (and the last receiving nothing), every row to rank 0, large blocks, nothing at all.
enum class Pattern { uneven, silent_first_rank, all_to_rank_0, large, empty };

// Rows that rank `src` sends rank `dst` in chunk c (known to every rank).
inline int64_t count(Pattern p, int src, int dst, int c, int size) {
  const int64_t h = (int64_t(src) * 5 + int64_t(dst) * 3 + int64_t(c) * 7) % 5;
  switch (p) {
    case Pattern::uneven:
      return h;  // 0..4, zeros included
    case Pattern::silent_first_rank:
      return src == 0 || dst == size - 1 ? 0 : h + 1;
    case Pattern::all_to_rank_0:
      return dst == 0 ? h + 2 : 0;
    case Pattern::large:
      return 3000 + 500 * h;
    case Pattern::empty:
      return 0;
  }
  return 0;
}

// Element k of row j of the block src sends dst in chunk c (seed tells uses apart): a
// small integer, so every dtype holds it exactly.
inline double element(int src, int dst, int c, int64_t j, int64_t k, DType dt, int64_t seed = 0) {
  const int64_t h = (int64_t(src) * 31 + int64_t(dst) * 17 + int64_t(c) * 13 + j * 7 + k + seed * 3) % 200 - 100;
  return dt == DType::b8 ? double(h & 1) : double(h);
}

// One all_to_all_v: the pattern, chunks per peer and the two buffers' layouts, the dtype,
// the row shape (after dim 0) and the elements' seed.
struct AllToAllCase {
  Pattern pattern;
  int chunks;
  bool send_chunk_major, recv_chunk_major;
  DType dtype;
  Shape row;
  int64_t seed = 0;
  ChunkLayout layout() const { return {chunks, send_chunk_major, recv_chunk_major}; }
};

// The blocks of one buffer in memory order: (peer, chunk) pairs as the layout orders them.
inline std::vector<std::pair<int, int>> block_order(int size, int chunks, bool chunk_major) {
  std::vector<std::pair<int, int>> out;
  for (int a = 0; a < (chunk_major ? chunks : size); ++a)
    for (int b = 0; b < (chunk_major ? size : chunks); ++b) out.emplace_back(chunk_major ? b : a, chunk_major ? a : b);
  return out;
}

// Rank me's counts, indexed [peer * chunks + chunk]: what it sends (received = false) or
// receives (true).
inline std::vector<int64_t> rows(const AllToAllCase& k, int me, int size, bool received) {
  std::vector<int64_t> out;
  for (int p = 0; p < size; ++p)
    for (int c = 0; c < k.chunks; ++c)
      out.push_back(received ? count(k.pattern, p, me, c, size) : count(k.pattern, me, p, c, size));
  return out;
}

// Rank me's send buffer (received = false) or the receive buffer it must get (true), in
// its layout, flattened.
inline std::vector<double> buffer(const AllToAllCase& k, int me, int size, bool received) {
  const int64_t row_elems = shape_numel(k.row);
  std::vector<double> v;
  for (auto [peer, c] : block_order(size, k.chunks, received ? k.recv_chunk_major : k.send_chunk_major)) {
    const int s = received ? peer : me, d = received ? me : peer;
    for (int64_t j = 0; j < count(k.pattern, s, d, c, size); ++j)
      for (int64_t e = 0; e < row_elems; ++e) v.push_back(element(s, d, c, j, e, k.dtype, k.seed));
  }
  return v;
}

// The shape of a buffer holding these counts' rows.
inline Shape buffer_shape(const AllToAllCase& k, const std::vector<int64_t>& counts) {
  Shape s{0};
  for (int64_t r : counts) s[0] += r;
  s.insert(s.end(), k.row.begin(), k.row.end());
  return s;
}

}  // namespace hmoe::dist::reference
