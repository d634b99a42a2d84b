// Tensor: a shared handle to shape, strides, offset, dtype and a Storage, with the
// autograd metadata (requires_grad, grad, grad_fn) hanging off it. Member functions
// for views, conversion and autograd are defined by the ops and autograd layers;
// this header holds the data structure and its metadata queries only.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/shape.h"
#include "engine/storage.h"

namespace hmoe {

namespace autograd {
class Node;
}

struct AutogradMeta;

struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;

  TensorOptions with_dtype(DType d) const { auto o = *this; o.dtype = d; return o; }
  TensorOptions with_device(Device d) const { auto o = *this; o.device = d; return o; }
  TensorOptions with_requires_grad(bool r) const { auto o = *this; o.requires_grad = r; return o; }
};

class TensorImpl {
 public:
  TensorImpl(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype);
  ~TensorImpl();

  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  std::unique_ptr<AutogradMeta> autograd;  // null until autograd touches the tensor
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // A new, uninitialised, contiguous tensor.
  static Tensor empty(const Shape& shape, TensorOptions opts = {});
  // A contiguous tensor over the caller's memory, without a copy (as libtorch's from_blob
  // and MLX's array over a pointer): `data` holds shape's elements of dtype on device,
  // aligned to the element size. deleter(data) runs once, when the last tensor or view
  // sharing the memory dies (a gradient or a copy does not share it); with none, the
  // caller keeps the memory alive while any such tensor lives. Writes through the tensor
  // (copy_, in-place ops, an optimiser) change the caller's memory.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device = Device::cpu(),
                          std::function<void(void*)> deleter = nullptr);
  // A tensor over existing storage (a view); checks the view stays inside storage.
  static Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t numel() const { return shape_numel(impl().shape); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t element_size() const { return dtype_size(dtype()); }
  size_t nbytes() const { return size_t(numel()) * element_size(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  // Whether nothing but this handle can reach the elements: the only handle to the
  // tensor, the only tensor on its storage, laid out densely over all of it. Such a
  // tensor may be adopted (e.g. as a leaf's .grad) instead of copied.
  bool is_sole_owner() const;
  // A short description for error messages: "f32[2, 3] on cpu".
  std::string meta_str() const;

  // Pointer to the first element; checks the dtype (T = void skips the check).
  template <typename T>
  T* data_ptr() const {
    if constexpr (!std::is_void_v<T>) {
      HMOE_CHECK(dtype_of<std::remove_const_t<T>>::value == dtype(), "data_ptr: tensor holds ", dtype_name(dtype()),
                 ", asked for ", dtype_name(dtype_of<std::remove_const_t<T>>::value));
      return static_cast<T*>(impl().storage->data()) + offset();
    } else {
      return static_cast<char*>(impl().storage->data()) + offset() * int64_t(element_size());
    }
  }

  // --- views and copies (ops/view.cpp, differentiable) ---
  Tensor view(const Shape& shape) const;      // must be viewable without a copy
  Tensor reshape(const Shape& shape) const;   // copies only when it must
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // 2-d transpose
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;
  Tensor squeeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  // Floating to integer conversion (i32, i64) truncates toward zero, as C++ and
  // PyTorch do (2.7 -> 2, -2.7 -> -2), on every device; NaN and values outside the
  // target's range are not defined (C++'s cast rules): clamp first. To bf16/f16: round
  // to nearest even.
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;

  // --- values (ops/view.cpp) ---
  double item() const;  // one-element tensors only
  template <typename T>
  T item() const { return static_cast<T>(item()); }
  std::vector<double> to_vector() const;  // every element, row-major, as double
  template <typename T>
  std::vector<T> to_vector_as() const;    // every element as T (dtype must match)
  std::string str(int64_t max_per_dim = 6) const;  // readable printing, truncated

  // In-place (no autograd; refused on tensors that require grad while grad mode is on).
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // broadcasts src into this; converts dtype/device

  // --- autograd (autograd/variable.cpp) ---
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r);
  const Tensor& grad() const;  // undefined tensor if none
  Tensor& mutable_grad();
  void set_grad(const Tensor& g);
  void zero_grad();  // drops the gradient
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  bool is_leaf() const;
  Tensor detach() const;  // shares storage, no history
  // Replaces this leaf's data (storage, shape, strides, offset, dtype) by src's while
  // keeping its identity, so every handle (a module's field, an optimizer's list) sees
  // the new data; keeps requires_grad, drops the gradient. Moves or casts parameters.
  void set_data(const Tensor& src);
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

 private:
  TensorImpl& impl() const {
    HMOE_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;  // null for leaves
  uint32_t output_nr = 0;                    // which output of grad_fn this is
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaves: the node that fills .grad
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace hmoe
