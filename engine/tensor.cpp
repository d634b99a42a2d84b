// Tensor construction and metadata queries (no math: ops live in ops/).
#include "engine/tensor.h"

#include <sstream>

namespace hmoe {

TensorImpl::TensorImpl(std::shared_ptr<Storage> st, Shape sh, Shape str, int64_t off, DType dt)
    : storage(std::move(st)), shape(std::move(sh)), strides(std::move(str)), offset(off), dtype(dt) {}

TensorImpl::~TensorImpl() = default;

Tensor Tensor::empty(const Shape& shape, TensorOptions opts) {
  HMOE_CHECK(shape.size() <= size_t(kMaxRank), "empty: rank ", shape.size(), " exceeds the maximum of ", kMaxRank);
  for (int64_t d : shape) HMOE_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  const int64_t bytes = checked_mul(shape_numel(shape), int64_t(dtype_size(opts.dtype)), "empty: bytes of the tensor");
  auto storage = std::make_shared<Storage>(size_t(bytes), opts.device);
  Tensor t(std::make_shared<TensorImpl>(std::move(storage), shape, contiguous_strides(shape), 0, opts.dtype));
  if (opts.requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device,
                         std::function<void(void*)> deleter) {
  HMOE_CHECK(shape.size() <= size_t(kMaxRank), "from_blob: rank ", shape.size(), " exceeds the maximum of ", kMaxRank);
  for (int64_t d : shape) HMOE_CHECK(d >= 0, "from_blob: negative dimension in shape ", shape_str(shape));
  const int64_t bytes = checked_mul(shape_numel(shape), int64_t(dtype_size(dtype)), "from_blob: bytes of the tensor");
  HMOE_CHECK(data != nullptr || bytes == 0, "from_blob: null data for ", bytes, " bytes");
  HMOE_CHECK(reinterpret_cast<uintptr_t>(data) % dtype_size(dtype) == 0, "from_blob: data at ", data,
             " is not aligned to the ", dtype_size(dtype), " bytes of ", dtype_name(dtype));
  auto storage = std::make_shared<Storage>(data, size_t(bytes), device, std::move(deleter));
  return Tensor(std::make_shared<TensorImpl>(std::move(storage), shape, contiguous_strides(shape), 0, dtype));
}

Tensor Tensor::make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  HMOE_CHECK(shape.size() == strides.size(), "view: shape ", shape_str(shape), " and strides ", shape_str(strides),
             " differ in rank");
  HMOE_CHECK(shape.size() <= size_t(kMaxRank), "view: rank ", shape.size(), " exceeds the maximum of ", kMaxRank);
  // The view must stay inside its storage.
  int64_t lo = offset, hi = offset;
  bool empty = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    HMOE_CHECK(shape[i] >= 0, "view: negative dimension in ", shape_str(shape));
    if (shape[i] == 0) empty = true;
    const int64_t span = (shape[i] - 1) * strides[i];
    (span < 0 ? lo : hi) += span;
  }
  const int64_t cap = int64_t(base.storage()->nbytes() / base.element_size());
  HMOE_CHECK(empty || (lo >= 0 && hi < cap), "view: shape ", shape_str(shape), " strides ", shape_str(strides),
             " offset ", offset, " reaches outside a storage of ", cap, " elements");
  return Tensor(std::make_shared<TensorImpl>(base.storage(), std::move(shape), std::move(strides), offset,
                                             base.dtype()));
}

int64_t Tensor::size(int64_t dim) const { return shape()[size_t(wrap_dim(dim, this->dim(), "size"))]; }
int64_t Tensor::stride(int64_t dim) const { return strides()[size_t(wrap_dim(dim, this->dim(), "stride"))]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape().size(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (shape()[i] == 0) return true;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

bool Tensor::is_sole_owner() const {
  return defined() && impl_.use_count() == 1 && impl().storage.use_count() == 1 && offset() == 0 && is_contiguous() &&
         nbytes() == impl().storage->nbytes();
}

std::string Tensor::meta_str() const {
  if (!defined()) return "undefined";
  std::ostringstream os;
  os << dtype_name(dtype()) << shape_str(shape());
  if (!device().is_cpu()) os << " on " << device().str();
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << (t.defined() ? t.str() : "undefined"); }

}  // namespace hmoe
