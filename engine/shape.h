/// @file
/// Shape and stride arithmetic shared by the tensor and every op: element counts,
/// contiguous strides, dim wrapping and NumPy broadcasting.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace hmoe {

/// A tensor's sizes (or strides), outermost dimension first.
using Shape = std::vector<int64_t>;

/// The highest rank a tensor may have.
inline constexpr int kMaxRank = 8;

/// Elements of a shape; an hmoe::Error when the product overflows int64.
int64_t shape_numel(const Shape& s);
/// a * b for sizes and counts (configs, files, the CLI), or an hmoe::Error naming `what`
/// when the product does not fit in int64 (a wrapped product would size a buffer wrongly).
int64_t checked_mul(int64_t a, int64_t b, const char* what);
int64_t checked_add(int64_t a, int64_t b, const char* what);  ///< the same for sums of such sizes
/// Row-major dense strides of shape s.
Shape contiguous_strides(const Shape& s);
std::string shape_str(const Shape& s);  ///< "[2, 3]"

/// Maps a possibly negative dim into [0, rank); throws naming op otherwise.
int64_t wrap_dim(int64_t dim, int64_t rank, const char* op);

/// NumPy broadcasting of two shapes; throws naming op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

/// Strides that read a tensor of shape `from` (with strides `strides`) as if it had
/// the broadcast shape `to` (0 on broadcast dims).
Shape broadcast_strides(const Shape& from, const Shape& strides, const Shape& to);

}  // namespace hmoe
