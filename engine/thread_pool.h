/// @file
/// The CPU thread pool and parallel_for. Work is split into chunks whose boundaries
/// depend only on the range and the grain, never on the thread count, so a kernel
/// that reduces per chunk and combines chunks in order is deterministic.
#pragma once

#include <cstdint>
#include <functional>

namespace hmoe {

/// The CPU thread pool's size (HMOE_NUM_THREADS, default all cores).
int num_threads();
/// Sets the pool size (>= 1). Takes effect for later parallel_for calls.
void set_num_threads(int n);
/// Whether the calling thread is running inside a parallel_for chunk.
bool in_parallel_region();

/// Calls fn(begin, end) over [0, n) in chunks of at least `grain` elements. Nested
/// calls run inline. Exceptions thrown by fn are rethrown on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

/// Number of fixed-size chunks parallel_for would use for (n, grain) when every
/// chunk must be independent of the thread count (for deterministic reductions).
inline int64_t chunk_count(int64_t n, int64_t chunk) { return chunk <= 0 ? 1 : (n + chunk - 1) / chunk; }

}  // namespace hmoe
