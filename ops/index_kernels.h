// The kernel contracts of the index family (ops/index.cpp: index_select/index_add,
// gather/scatter_add, one_hot) and the sort family (ops/sort.cpp: topk/sort, cumsum,
// bincount): kernel signatures and their dispatch stubs. Every kernel validates the
// indices it reads and raises hmoe::Error naming the first offender. Filled by CPU:
// ops/cpu/index.cpp, ops/cpu/sort.cpp; CUDA: ops/cuda/index.cu, ops/cuda/sort.cu.
#pragma once

#include <cstdint>

#include "engine/tensor.h"
#include "ops/dispatch.h"

namespace hmoe {

// out[o, j, :] = src[o, idx[j], :] over contiguous src [outer, src_n, inner] and
// out [outer, n, inner]; idx is a contiguous 1-d i32/i64 tensor of n entries.
using IndexSelectKernel = void (*)(const Tensor& src, const Tensor& idx, const Tensor& out, int64_t outer,
                                   int64_t src_n, int64_t inner, const char* op);
// dst[o, idx[j], :] += src[o, j, :] over contiguous dst [outer, dst_n, inner] and src
// [outer, n, inner]. Rows landing on one destination are summed in increasing j.
using IndexAddKernel = void (*)(const Tensor& dst, const Tensor& idx, const Tensor& src, int64_t outer,
                                int64_t dst_n, int64_t inner, const char* op);
// out[i] = t[i with i[dim] replaced by index[i]]; t and index any strides, out
// contiguous with index's shape.
using GatherKernel = void (*)(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& out);
// dst[i with i[dim] replaced by index[i]] += src[i]; dst contiguous, src has index's
// shape (any strides). Each destination sums its sources in increasing position.
using ScatterAddKernel = void (*)(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);
// out (contiguous [numel(ids), num_classes], zero-filled by the kernel) gets a one at
// each id.
using OneHotKernel = void (*)(const Tensor& ids, const Tensor& out, int64_t num_classes);

// The first k entries of each line of t along dim in order (descending: largest
// first), ties to the lower index, NaN ordered as the largest value. values and
// indices (i64) are contiguous with t's shape except k along dim.
using SortKernel = void (*)(const Tensor& t, int64_t dim, int64_t k, bool descending, const Tensor& values,
                            const Tensor& indices);
// Inclusive prefix sums of contiguous t along dim (reverse: from the end), each element
// summed sequentially along the dim; out is contiguous with t's shape and dtype.
using CumsumKernel = void (*)(const Tensor& t, int64_t dim, bool reverse, const Tensor& out);
// out[ids[i]] += weights[i] (or 1 without weights), in increasing i; out zero-filled
// by the kernel, ids checked against [0, out.numel()).
using BincountKernel = void (*)(const Tensor& ids, const Tensor& weights, const Tensor& out);

HMOE_DECLARE_STUB(IndexSelectKernel, index_select_stub);
HMOE_DECLARE_STUB(IndexAddKernel, index_add_stub);
HMOE_DECLARE_STUB(GatherKernel, gather_stub);
HMOE_DECLARE_STUB(ScatterAddKernel, scatter_add_stub);
HMOE_DECLARE_STUB(OneHotKernel, one_hot_stub);
HMOE_DECLARE_STUB(SortKernel, sort_stub);
HMOE_DECLARE_STUB(CumsumKernel, cumsum_stub);
HMOE_DECLARE_STUB(BincountKernel, bincount_stub);

}  // namespace hmoe
