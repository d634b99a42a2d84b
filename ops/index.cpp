// Indexing, gathering, joining and splitting ops and their (deterministic) gradients:
// embedding, index_select, gather, scatter_add, masked_fill, one_hot, cat, stack, split,
// chunk, unbind.
#include "ops/index.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/index_kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"

namespace hmoe {

HMOE_DEFINE_STUB(IndexSelectKernel, index_select_stub);
HMOE_DEFINE_STUB(IndexAddKernel, index_add_stub);
HMOE_DEFINE_STUB(GatherKernel, gather_stub);
HMOE_DEFINE_STUB(ScatterAddKernel, scatter_add_stub);
HMOE_DEFINE_STUB(OneHotKernel, one_hot_stub);

using autograd::record;

namespace {

void check_index(const char* op, const Tensor& idx) {
  HMOE_CHECK(idx.defined(), op, ": index is undefined");
  HMOE_CHECK(idx.dtype() == DType::i64 || idx.dtype() == DType::i32, op, ": index must be i32 or i64, got ",
             idx.meta_str());
}

// Sizes of the dims before and after dim.
std::pair<int64_t, int64_t> outer_inner(const Shape& shape, int64_t dim) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[size_t(d)];
  for (size_t d = size_t(dim) + 1; d < shape.size(); ++d) inner *= shape[d];
  return {outer, inner};
}

Tensor index_select_impl(const Tensor& t, int64_t dim, const Tensor& idx, const char* op);

// zeros(shape) with the slices of g added at idx along dim (repeated indices summed in
// increasing position). Differentiable in g: its backward selects the same rows.
Tensor index_add_zeros(const Shape& shape, int64_t dim, const Tensor& idx, const Tensor& g, const char* op) {
  Tensor out = zeros(shape, {g.dtype(), g.device()});
  const auto [outer, inner] = outer_inner(shape, dim);
  index_add_stub.get(g.device())(out, idx, g.contiguous().detach(), outer, shape[size_t(dim)], inner, op);
  record("index_add", {g}, {out}, [dim, idx, op](const std::vector<Tensor>& gg) {
    return std::vector<Tensor>{index_select_impl(gg[0], dim, idx, op)};
  });
  return out;
}

// idx: contiguous 1-d i32/i64, already on t's device.
Tensor index_select_impl(const Tensor& t, int64_t dim, const Tensor& idx, const char* op) {
  const Tensor src = t.contiguous();
  Shape shape = t.shape();
  shape[size_t(dim)] = idx.numel();
  Tensor out = Tensor::empty(shape, {t.dtype(), t.device()});
  const auto [outer, inner] = outer_inner(t.shape(), dim);
  index_select_stub.get(t.device())(src.detach(), idx, out, outer, t.size(dim), inner, op);
  record(op, {t}, {out}, [in = t.shape(), dim, idx, op](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{index_add_zeros(in, dim, idx, g[0], op)};
  });
  return out;
}

// Pads g with trailing zeros up to `shape` (each dim of g no larger); differentiable.
Tensor pad_to(Tensor g, const Shape& shape) {
  for (int64_t d = 0; d < g.dim(); ++d) {
    if (g.size(d) == shape[size_t(d)]) continue;
    Shape zs = g.shape();
    zs[size_t(d)] = shape[size_t(d)] - g.size(d);
    g = cat({g, zeros(zs, {g.dtype(), g.device()})}, d);
  }
  return g;
}

// gather/scatter_add shape rules (PyTorch's): one rank; index no larger than t outside dim.
void check_gather_shapes(const char* op, const Tensor& t, int64_t dim, const Tensor& index) {
  HMOE_CHECK(index.dim() == t.dim(), op, ": index ", index.meta_str(), " must have the rank of ", t.meta_str());
  for (int64_t d = 0; d < t.dim(); ++d)
    HMOE_CHECK(d == dim || index.size(d) <= t.size(d), op, ": index ", index.meta_str(), " is larger than ",
               t.meta_str(), " in dim ", d);
}

// 0-d gather/scatter operands act as 1-element vectors.
Tensor as_1d(const Tensor& t) { return t.dim() == 0 ? t.reshape({1}) : t; }

}  // namespace

Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index) {
  check_index("index_select", index);
  HMOE_CHECK(index.dim() <= 1, "index_select: index must be 1-d, got ", index.meta_str());
  HMOE_CHECK(t.dim() >= 1, "index_select: needs a tensor with at least one dim, got ", t.meta_str());
  ops::common_device("index_select", {&t, &index});
  dim = wrap_dim(dim, t.dim(), "index_select");
  return index_select_impl(t, dim, index.reshape({-1}).contiguous().detach(), "index_select");
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  HMOE_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", weight.meta_str());
  check_index("embedding", ids);
  ops::common_device("embedding", {&weight, &ids});
  Shape shape = ids.shape();
  shape.push_back(weight.size(1));
  return index_select_impl(weight, 0, ids.reshape({-1}).contiguous().detach(), "embedding").reshape(shape);
}

Tensor gather(const Tensor& t, int64_t dim, const Tensor& index) {
  check_index("gather", index);
  ops::common_device("gather", {&t, &index});
  dim = wrap_dim(dim, t.dim(), "gather");
  check_gather_shapes("gather", t, dim, index);
  const Tensor t1 = as_1d(t.detach()), i1 = as_1d(index.detach());
  Tensor out = Tensor::empty(index.shape(), {t.dtype(), t.device()});
  gather_stub.get(t.device())(t1, dim, i1, as_1d(out));
  record("gather", {t}, {out}, [in = t.shape(), dim, idx = index.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{scatter_add(zeros(in, {g[0].dtype(), g[0].device()}), dim, idx, g[0])};
  });
  return out;
}

Tensor scatter_add(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index("scatter_add", index);
  ops::common_device("scatter_add", {&t, &index, &src});
  HMOE_CHECK(index.dim() == t.dim() && src.dim() == t.dim(), "scatter_add: ", t.meta_str(), ", index ",
             index.meta_str(), " and src ", src.meta_str(), " must have one rank");
  HMOE_CHECK(t.dtype() == src.dtype(), "scatter_add: dtypes differ (", t.meta_str(), ", src ", src.meta_str(), ")");
  HMOE_CHECK(t.dtype() != DType::b8, "scatter_add: not defined for bool tensors, got ", t.meta_str());
  dim = wrap_dim(dim, t.dim(), "scatter_add");
  check_gather_shapes("scatter_add", t, dim, index);
  for (int64_t d = 0; d < t.dim(); ++d)
    HMOE_CHECK(index.size(d) <= src.size(d), "scatter_add: index ", index.meta_str(), " is larger than src ",
               src.meta_str(), " in dim ", d);
  // Only the part of src that index covers takes part (PyTorch's rule).
  Tensor s = as_1d(src.detach());
  for (int64_t d = 0; d < t.dim(); ++d) s = s.narrow(d, 0, index.size(d));
  Tensor out = t.detach().clone();
  scatter_add_stub.get(t.device())(as_1d(out), dim, as_1d(index.detach()), s);
  record("scatter_add", {t, src}, {out},
         [idx = index.detach(), dim, ss = src.shape(), gt = t.requires_grad(),
          gs = src.requires_grad()](const std::vector<Tensor>& g) {
           return std::vector<Tensor>{gt ? g[0] : Tensor(), gs ? pad_to(gather(g[0], dim, idx), ss) : Tensor()};
         });
  return out;
}

Tensor masked_fill(const Tensor& t, const Tensor& mask, double value) {
  HMOE_CHECK(mask.dtype() == DType::b8, "masked_fill: mask must be bool, got ", mask.meta_str());
  ops::common_device("masked_fill", {&t, &mask});
  HMOE_CHECK(is_floating(t.dtype()) || std::isfinite(value), "masked_fill: value ", value,
             " does not fit the integer tensor ", t.meta_str());
  HMOE_CHECK(broadcast_shapes(t.shape(), mask.shape(), "masked_fill") == t.shape(), "masked_fill: mask ",
             mask.meta_str(), " does not broadcast to ", t.meta_str());
  // The fill value takes t's dtype, so the result keeps it; where() zeroes the gradient under the mask.
  return where(mask, full({}, value, {t.dtype(), t.device()}), t);
}

Tensor one_hot(const Tensor& ids, int64_t num_classes, DType dtype) {
  check_index("one_hot", ids);
  HMOE_CHECK(num_classes > 0, "one_hot: num_classes must be positive, got ", num_classes);
  Shape shape = ids.shape();
  shape.push_back(num_classes);
  Tensor out = Tensor::empty(shape, {dtype, ids.device()});
  one_hot_stub.get(ids.device())(ids.contiguous().detach(), out, num_classes);
  return out;
}

Tensor cat(const std::vector<Tensor>& ts, int64_t dim) {
  HMOE_CHECK(!ts.empty(), "cat: no tensors given");
  const Tensor& first = ts[0];
  for (const Tensor& t : ts) HMOE_CHECK(t.defined(), "cat: an input is undefined");
  HMOE_CHECK(first.dim() >= 1, "cat: cannot concatenate 0-d tensors (", first.meta_str(), ")");
  dim = wrap_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  int64_t total = 0;
  for (const Tensor& t : ts) {
    HMOE_CHECK(t.dim() == first.dim(), "cat: ", t.meta_str(), " and ", first.meta_str(), " differ in rank");
    HMOE_CHECK(t.dtype() == first.dtype(), "cat: dtypes differ (", t.meta_str(), ", ", first.meta_str(), ")");
    HMOE_CHECK(t.device() == first.device(), "cat: devices differ (", t.meta_str(), ", ", first.meta_str(), ")");
    for (int64_t d = 0; d < t.dim(); ++d)
      HMOE_CHECK(d == dim || t.size(d) == first.size(d), "cat: ", t.meta_str(), " and ", first.meta_str(),
                 " differ outside dim ", dim);
    total += t.size(dim);
  }
  shape[size_t(dim)] = total;
  Tensor out = Tensor::empty(shape, {first.dtype(), first.device()});
  std::vector<int64_t> sizes;
  std::vector<bool> needs;
  {
    NoGradGuard ng;
    int64_t off = 0;
    for (const Tensor& t : ts) {
      if (t.numel() > 0) out.narrow(dim, off, t.size(dim)).copy_(t.detach());
      off += t.size(dim);
      sizes.push_back(t.size(dim));
      needs.push_back(t.requires_grad());
    }
  }
  record("cat", ts, {out}, [sizes, needs, dim](const std::vector<Tensor>& g) {
    std::vector<Tensor> gs;
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      gs.push_back(needs[i] ? g[0].narrow(dim, off, sizes[i]) : Tensor());
      off += sizes[i];
    }
    return gs;
  });
  return out;
}

Tensor stack(const std::vector<Tensor>& ts, int64_t dim) {
  HMOE_CHECK(!ts.empty(), "stack: no tensors given");
  for (const Tensor& t : ts) HMOE_CHECK(t.defined(), "stack: an input is undefined");
  dim = wrap_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<Tensor> u;
  for (const Tensor& t : ts) {
    HMOE_CHECK(t.shape() == ts[0].shape(), "stack: ", t.meta_str(), " and ", ts[0].meta_str(), " differ in shape");
    u.push_back(t.unsqueeze(dim));
  }
  return cat(u, dim);
}

namespace {
// Pieces of t along dim (views; each squeezed when `squeeze`, the pieces then being of
// size 1) as one autograd node: its backward writes every piece's gradient into one
// buffer of t's shape. Pieces recorded as separate slices would each make a zero tensor
// of t's full size and the engine would add them up (for attention's q, k, v: three
// full-size fills, copies and two full-size adds per layer instead of one buffer).
std::vector<Tensor> split_node(const Tensor& t, const std::vector<int64_t>& sizes, int64_t dim, bool squeeze) {
  std::vector<Tensor> out;
  {
    NoGradGuard ng;  // the views themselves record nothing; the node below covers them all
    int64_t off = 0;
    for (int64_t s : sizes) {
      Tensor piece = t.narrow(dim, off, s);
      out.push_back(squeeze ? piece.squeeze(dim) : piece);
      off += s;
    }
  }
  autograd::record("split", {t}, out, [in = t.shape(), sizes, dim, squeeze](const std::vector<Tensor>& g) {
    Tensor gi = Tensor::empty(in, {g[0].dtype(), g[0].device()});
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] > 0) gi.narrow(dim, off, sizes[i]).copy_(squeeze ? g[i].unsqueeze(dim) : g[i]);
      off += sizes[i];
    }
    return std::vector<Tensor>{gi};
  });
  return out;
}
}  // namespace

std::vector<Tensor> split(const Tensor& t, const std::vector<int64_t>& sizes, int64_t dim) {
  HMOE_CHECK(t.dim() >= 1, "split: cannot split a 0-d tensor");
  dim = wrap_dim(dim, t.dim(), "split");
  HMOE_CHECK(!sizes.empty(), "split: no sizes given for ", t.meta_str());
  int64_t total = 0;
  for (int64_t s : sizes) {
    HMOE_CHECK(s >= 0, "split: negative size ", s, " for ", t.meta_str());
    total += s;
  }
  HMOE_CHECK(total == t.size(dim), "split: sizes sum to ", total, " but dim ", dim, " of ", t.meta_str(), " has ",
             t.size(dim));
  return split_node(t, sizes, dim, false);
}

std::vector<Tensor> unbind(const Tensor& t, int64_t dim) {
  HMOE_CHECK(t.dim() >= 1, "unbind: cannot unbind a 0-d tensor");
  dim = wrap_dim(dim, t.dim(), "unbind");
  if (t.size(dim) == 0) return {};
  return split_node(t, std::vector<int64_t>(size_t(t.size(dim)), 1), dim, true);
}

std::vector<Tensor> split(const Tensor& t, int64_t split_size, int64_t dim) {
  HMOE_CHECK(t.dim() >= 1, "split: cannot split a 0-d tensor");
  dim = wrap_dim(dim, t.dim(), "split");
  const int64_t n = t.size(dim);
  // PyTorch: a size of 0 is allowed only for an empty dim.
  HMOE_CHECK(split_size > 0 || (split_size == 0 && n == 0), "split: split size must be positive, got ", split_size,
             " for ", t.meta_str());
  std::vector<int64_t> sizes;
  for (int64_t off = 0; off < n; off += split_size) sizes.push_back(std::min(split_size, n - off));
  if (sizes.empty()) sizes.push_back(0);
  return split(t, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& t, int64_t chunks, int64_t dim) {
  HMOE_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
  HMOE_CHECK(t.dim() >= 1, "chunk: cannot chunk a 0-d tensor");
  dim = wrap_dim(dim, t.dim(), "chunk");
  const int64_t n = t.size(dim);
  // PyTorch: an empty dim gives `chunks` empty pieces; otherwise pieces of
  // ceil(n / chunks), which may be fewer than chunks.
  if (n == 0) return split(t, std::vector<int64_t>(static_cast<size_t>(chunks), 0), dim);
  return split(t, (n + chunks - 1) / chunks, dim);
}

}  // namespace hmoe
