/// @file
/// Indexing and gathering: embedding, index_select, gather, scatter_add, masked_fill,
/// one_hot; joining and splitting: cat, stack, split, chunk, unbind. Backward passes are
/// deterministic (fixed accumulation order, no atomics).
#pragma once

#include <vector>

#include "engine/tensor.h"

namespace hmoe {

/// weight [V, D], ids (i32/i64, any shape) -> [..., D]. Out-of-range ids are an error.
Tensor embedding(const Tensor& weight, const Tensor& ids);
/// Rows of t along dim picked by the 1-d index.
Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index);
/// out[i][j] = t[index[i][j]][j] (dim 0), etc.; index has t's rank.
Tensor gather(const Tensor& t, int64_t dim, const Tensor& index);
/// out = t with src added at index along dim (differentiable in t and src).
Tensor scatter_add(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& src);
/// Elements where mask (bool, broadcast to t) is true become value.
Tensor masked_fill(const Tensor& t, const Tensor& mask, double value);
/// ids (integer) -> [..., num_classes] in dtype (f32 default).
Tensor one_hot(const Tensor& ids, int64_t num_classes, DType dtype = DType::f32);

/// The tensors joined along an existing dim (the others' sizes must match).
Tensor cat(const std::vector<Tensor>& ts, int64_t dim);
/// The tensors (of one shape) joined along a new dim.
Tensor stack(const std::vector<Tensor>& ts, int64_t dim);
/// Views of split_size entries along dim (the last may be shorter).
std::vector<Tensor> split(const Tensor& t, int64_t split_size, int64_t dim);
/// Views of sizes[i] entries along dim (the sizes add up to t.size(dim)).
std::vector<Tensor> split(const Tensor& t, const std::vector<int64_t>& sizes, int64_t dim);
/// Views of ceil(size / chunks) entries along dim, as PyTorch (so possibly fewer than
/// `chunks`; the last may be smaller).
std::vector<Tensor> chunk(const Tensor& t, int64_t chunks, int64_t dim);
/// The size-1 pieces of t along dim, that dim removed (views), e.g. q, k, v of a fused
/// projection. split, chunk and unbind are one autograd node each: the backward makes
/// one gradient buffer for t, not one per piece.
std::vector<Tensor> unbind(const Tensor& t, int64_t dim);

}  // namespace hmoe
