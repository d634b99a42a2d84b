// Indexing, gathering, joining and splitting ops and their (deterministic) gradients.
#include "ops/index.h"

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"

namespace hmoe {

// Kernel interfaces (CPU in ops/cpu/index.cpp).
// Rows along the middle dim of a contiguous [outer, n, inner] view: out[o, i, :] = t[o, idx[i], :].
using IndexSelectKernel = void (*)(const Tensor& t, const Tensor& idx, const Tensor& out, int64_t outer, int64_t n,
                                   int64_t inner);
// dst[o, idx[i], :] += src[o, i, :] in increasing i (deterministic).
using IndexAddKernel = void (*)(const Tensor& dst, const Tensor& idx, const Tensor& src, int64_t outer, int64_t n,
                                int64_t inner);
// gather / scatter_add over contiguous tensors along dim.
using GatherKernel = void (*)(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& out);
using ScatterAddKernel = void (*)(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);

HMOE_DEFINE_STUB(IndexSelectKernel, index_select_stub);
HMOE_DEFINE_STUB(IndexAddKernel, index_add_stub);
HMOE_DEFINE_STUB(GatherKernel, gather_stub);
HMOE_DEFINE_STUB(ScatterAddKernel, scatter_add_stub);

namespace {
void check_index(const char* op, const Tensor& idx) {
  HMOE_CHECK(idx.dtype() == DType::i64 || idx.dtype() == DType::i32, op, ": index must be i32 or i64, got ",
             idx.meta_str());
}

// Adds g (shape of the selection) into zeros of `shape` at idx along dim.
Tensor index_add_into_zeros(const Shape& shape, int64_t dim, const Tensor& idx, const Tensor& g) {
  Tensor out = zeros(shape, {g.dtype(), g.device()});
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= shape[size_t(d)];
  for (size_t d = size_t(dim) + 1; d < shape.size(); ++d) inner *= shape[d];
  index_add_stub.get(g.device())(out, idx, g.contiguous().detach(), outer, idx.numel(), inner);
  return out;
}
}  // namespace

Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index) {
  check_index("index_select", index);
  HMOE_CHECK(index.dim() <= 1, "index_select: index must be 1-d, got ", index.meta_str());
  HMOE_CHECK(t.dim() >= 1, "index_select: needs a tensor with at least one dim, got ", t.meta_str());
  ops::common_device("index_select", {&t, &index});
  dim = wrap_dim(dim, t.dim(), "index_select");
  const Tensor idx = index.reshape({-1}).contiguous();
  const Tensor src = t.contiguous();
  Shape shape = t.shape();
  shape[size_t(dim)] = idx.numel();
  Tensor out = Tensor::empty(shape, {t.dtype(), t.device()});
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  index_select_stub.get(t.device())(src.detach(), idx.detach(), out, outer, idx.numel(), inner);
  autograd::record("index_select", {t}, {out}, [in = t.shape(), dim, idx = idx.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{index_add_into_zeros(in, dim, idx, g[0])};
  });
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  HMOE_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", weight.meta_str());
  check_index("embedding", ids);
  Shape shape = ids.shape();
  shape.push_back(weight.size(1));
  return index_select(weight, 0, ids.reshape({-1})).reshape(shape);
}

Tensor gather(const Tensor& t, int64_t dim, const Tensor& index) {
  check_index("gather", index);
  HMOE_CHECK(index.dim() == t.dim(), "gather: index ", index.meta_str(), " must have the rank of ", t.meta_str());
  dim = wrap_dim(dim, t.dim(), "gather");
  for (int64_t d = 0; d < t.dim(); ++d)
    HMOE_CHECK(d == dim || index.size(d) <= t.size(d), "gather: index ", index.meta_str(), " is larger than ",
               t.meta_str(), " in dim ", d);
  Tensor out = Tensor::empty(index.shape(), {t.dtype(), t.device()});
  gather_stub.get(t.device())(t.contiguous().detach(), dim, index.contiguous().detach(), out);
  autograd::record("gather", {t}, {out}, [in = t.shape(), dim, idx = index.contiguous().detach(),
                                          dt = t.dtype()](const std::vector<Tensor>& g) {
    Tensor z = zeros(in, {g[0].dtype(), g[0].device()});
    scatter_add_stub.get(z.device())(z, dim, idx, g[0].contiguous().detach());
    return std::vector<Tensor>{z};
  });
  return out;
}

Tensor scatter_add(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index("scatter_add", index);
  HMOE_CHECK(index.dim() == t.dim() && src.dim() == t.dim(), "scatter_add: ", t.meta_str(), ", index ",
             index.meta_str(), " and src ", src.meta_str(), " must have one rank");
  HMOE_CHECK(t.dtype() == src.dtype(), "scatter_add: dtypes differ (", t.meta_str(), ", ", src.meta_str(), ")");
  dim = wrap_dim(dim, t.dim(), "scatter_add");
  for (int64_t d = 0; d < t.dim(); ++d) {
    HMOE_CHECK(index.size(d) <= src.size(d), "scatter_add: index ", index.meta_str(), " is larger than src ",
               src.meta_str());
    HMOE_CHECK(d == dim || index.size(d) <= t.size(d), "scatter_add: index ", index.meta_str(), " is larger than ",
               t.meta_str(), " in dim ", d);
  }
  Tensor out = t.detach().clone();
  Tensor s = src.narrow(0, 0, index.size(0));
  for (int64_t d = 1; d < t.dim(); ++d) s = s.narrow(d, 0, index.size(d));
  scatter_add_stub.get(t.device())(out, dim, index.contiguous().detach(), s.contiguous().detach());
  autograd::record("scatter_add", {t, src}, {out},
                   [idx = index.contiguous().detach(), dim, ss = src.shape()](const std::vector<Tensor>& g) {
                     Tensor gs = gather(g[0], dim, idx);
                     Tensor full_gs = zeros(ss, {gs.dtype(), gs.device()});
                     Tensor v = full_gs;
                     for (int64_t d = 0; d < gs.dim(); ++d) v = v.narrow(d, 0, gs.size(d));
                     NoGradGuard ng;
                     v.copy_(gs);
                     return std::vector<Tensor>{g[0], full_gs};
                   });
  return out;
}

Tensor masked_fill(const Tensor& t, const Tensor& mask, double value) {
  HMOE_CHECK(mask.dtype() == DType::b8, "masked_fill: mask must be bool, got ", mask.meta_str());
  broadcast_shapes(t.shape(), mask.shape(), "masked_fill");
  return where(mask.expand(t.shape()), scalar_like(value, t), t);
}

Tensor one_hot(const Tensor& ids, int64_t num_classes, DType dtype) {
  check_index("one_hot", ids);
  HMOE_CHECK(num_classes > 0, "one_hot: num_classes must be positive, got ", num_classes);
  if (ids.numel() > 0) {
    const Tensor lo = min(ids.to(DType::i64)), hi = max(ids.to(DType::i64));
    HMOE_CHECK(lo.item() >= 0 && hi.item() < double(num_classes), "one_hot: ids must be in [0, ", num_classes,
               "), got values in [", lo.item(), ", ", hi.item(), "]");
  }
  Tensor cls = arange(num_classes, {DType::i64, ids.device()});
  return eq(ids.to(DType::i64).unsqueeze(-1), cls).to(dtype);
}

Tensor cat(const std::vector<Tensor>& ts, int64_t dim) {
  HMOE_CHECK(!ts.empty(), "cat: no tensors given");
  const Tensor& first = ts[0];
  HMOE_CHECK(first.dim() >= 1, "cat: cannot concatenate 0-d tensors");
  dim = wrap_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  int64_t total = 0;
  for (const Tensor& t : ts) {
    HMOE_CHECK(t.dim() == first.dim() && t.dtype() == first.dtype() && t.device() == first.device(),
               "cat: ", t.meta_str(), " does not match ", first.meta_str(), " in rank, dtype or device");
    for (int64_t d = 0; d < t.dim(); ++d)
      HMOE_CHECK(d == dim || t.size(d) == first.size(d), "cat: ", t.meta_str(), " and ", first.meta_str(),
                 " differ outside dim ", dim);
    total += t.size(dim);
  }
  shape[size_t(dim)] = total;
  Tensor out = Tensor::empty(shape, {first.dtype(), first.device()});
  std::vector<int64_t> sizes;
  {
    NoGradGuard ng;
    int64_t off = 0;
    for (const Tensor& t : ts) {
      Tensor slot = out.narrow(dim, off, t.size(dim));
      slot.copy_(t.detach());
      off += t.size(dim);
      sizes.push_back(t.size(dim));
    }
  }
  autograd::record("cat", ts, {out}, [sizes, dim](const std::vector<Tensor>& g) {
    std::vector<Tensor> gs;
    int64_t off = 0;
    for (int64_t s : sizes) {
      gs.push_back(g[0].narrow(dim, off, s));
      off += s;
    }
    return gs;
  });
  return out;
}

Tensor stack(const std::vector<Tensor>& ts, int64_t dim) {
  HMOE_CHECK(!ts.empty(), "stack: no tensors given");
  dim = wrap_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<Tensor> u;
  for (const Tensor& t : ts) {
    HMOE_CHECK(t.shape() == ts[0].shape(), "stack: ", t.meta_str(), " and ", ts[0].meta_str(), " differ in shape");
    u.push_back(t.unsqueeze(dim));
  }
  return cat(u, dim);
}

std::vector<Tensor> split(const Tensor& t, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, t.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    HMOE_CHECK(s >= 0, "split: negative size ", s);
    total += s;
  }
  HMOE_CHECK(total == t.size(dim), "split: sizes sum to ", total, " but dim ", dim, " of ", t.meta_str(), " has ",
             t.size(dim));
  std::vector<Tensor> out;
  int64_t off = 0;
  for (int64_t s : sizes) {
    out.push_back(t.narrow(dim, off, s));
    off += s;
  }
  return out;
}

std::vector<Tensor> split(const Tensor& t, int64_t split_size, int64_t dim) {
  HMOE_CHECK(split_size > 0, "split: split size must be positive, got ", split_size);
  dim = wrap_dim(dim, t.dim(), "split");
  std::vector<int64_t> sizes;
  for (int64_t off = 0; off < t.size(dim); off += split_size) sizes.push_back(std::min(split_size, t.size(dim) - off));
  if (sizes.empty()) sizes.push_back(0);
  return split(t, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& t, int64_t chunks, int64_t dim) {
  HMOE_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
  dim = wrap_dim(dim, t.dim(), "chunk");
  const int64_t n = t.size(dim);
  return split(t, std::max<int64_t>(1, (n + chunks - 1) / chunks), dim);
}

}  // namespace hmoe
