/// @file
/// Tensor: a shared handle to shape, strides, offset, dtype and a Storage, with the
/// autograd metadata (requires_grad, grad, grad_fn) hanging off it. Member functions
/// for views, conversion and autograd are defined by the ops and autograd layers;
/// this header holds the data structure and its metadata queries only.
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

/// Autograd state of a tensor (requires_grad, grad, grad_fn); created on first use.
struct AutogradMeta;

/// How a new tensor is made: its dtype, its device and whether it requires grad.
struct TensorOptions {
  DType dtype = DType::f32;       ///< element type
  Device device = Device::cpu();  ///< where the storage lives
  bool requires_grad = false;     ///< whether autograd tracks it (a leaf)

  /// A copy with dtype d.
  TensorOptions with_dtype(DType d) const { auto o = *this; o.dtype = d; return o; }
  /// A copy with device d.
  TensorOptions with_device(Device d) const { auto o = *this; o.device = d; return o; }
  /// A copy with requires_grad r.
  TensorOptions with_requires_grad(bool r) const { auto o = *this; o.requires_grad = r; return o; }
};

/// What a Tensor handle points at: storage, shape, strides, offset, dtype and autograd
/// state. Views share the Storage, not the TensorImpl.
class TensorImpl {
 public:
  /// Checks nothing: Tensor::make_view and Tensor::empty are the checked ways in.
  TensorImpl(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype);
  ~TensorImpl();

  std::shared_ptr<Storage> storage;        ///< the elements (shared by views)
  Shape shape;                             ///< size of each dimension
  Shape strides;                           ///< step of each dimension, in elements
  int64_t offset = 0;                      ///< in elements
  DType dtype = DType::f32;                ///< element type
  std::unique_ptr<AutogradMeta> autograd;  ///< null until autograd touches the tensor
};

/// An n-dimensional array: a shared handle (copying a Tensor shares its elements) to a
/// shape, strides, dtype, device and storage, with autograd metadata. Ops are free
/// functions in namespace hmoe (ops/*.h) and these members; views share storage.
class Tensor {
 public:
  /// An undefined tensor (defined() is false).
  Tensor() = default;
  /// A handle to impl.
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  /// A new, uninitialised, contiguous tensor.
  static Tensor empty(const Shape& shape, TensorOptions opts = {});
  /// A contiguous tensor over the caller's memory, without a copy (as libtorch's from_blob
  /// and MLX's array over a pointer): `data` holds shape's elements of dtype on device,
  /// aligned to the element size. deleter(data) runs once, when the last tensor or view
  /// sharing the memory dies (a gradient or a copy does not share it); with none, the
  /// caller keeps the memory alive while any such tensor lives. Writes through the tensor
  /// (copy_, in-place ops, an optimiser) change the caller's memory.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device = Device::cpu(),
                          std::function<void(void*)> deleter = nullptr);
  /// A tensor over existing storage (a view); checks the view stays inside storage.
  static Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset);

  /// Whether the handle points at a tensor.
  bool defined() const { return impl_ != nullptr; }
  /// The size of every dimension.
  const Shape& shape() const { return impl().shape; }
  /// The stride of every dimension, in elements.
  const Shape& strides() const { return impl().strides; }
  /// The size of dimension dim (negative counts from the end).
  int64_t size(int64_t dim) const;
  /// The stride of dimension dim, in elements (negative counts from the end).
  int64_t stride(int64_t dim) const;
  /// The number of dimensions.
  int64_t dim() const { return int64_t(impl().shape.size()); }
  /// The number of elements.
  int64_t numel() const { return shape_numel(impl().shape); }
  /// Where the first element sits in the storage, in elements.
  int64_t offset() const { return impl().offset; }
  /// The element type.
  DType dtype() const { return impl().dtype; }
  /// The device the storage lives on.
  Device device() const { return impl().storage->device(); }
  /// Bytes per element.
  size_t element_size() const { return dtype_size(dtype()); }
  /// Bytes of the elements (numel() * element_size()).
  size_t nbytes() const { return size_t(numel()) * element_size(); }
  /// Whether the strides are row-major dense (views may not be).
  bool is_contiguous() const;
  /// The storage shared with views of this tensor.
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  /// The shared TensorImpl, for the engine's own use.
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  /// Whether o is the same handle target (not merely equal values).
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  /// Whether nothing but this handle can reach the elements: the only handle to the
  /// tensor, the only tensor on its storage, laid out densely over all of it. Such a
  /// tensor may be adopted (e.g. as a leaf's .grad) instead of copied.
  bool is_sole_owner() const;
  /// A short description for error messages: "f32[2, 3] on cpu".
  std::string meta_str() const;

  /// Pointer to the first element; checks the dtype (T = void skips the check).
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
  Tensor view(const Shape& shape) const;     ///< must be viewable without a copy
  Tensor reshape(const Shape& shape) const;  ///< copies only when it must
  /// A view with the dimensions reordered: dimension i of the result is dims[i] of this.
  Tensor permute(const std::vector<int64_t>& dims) const;
  /// A view with dimensions d0 and d1 swapped.
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  ///< 2-d transpose
  /// A view of `length` entries of dimension dim from start.
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  /// A view of entries [start, end) of dimension dim, every step-th.
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  /// A view of entry index of dimension dim, that dimension removed.
  Tensor select(int64_t dim, int64_t index) const;
  /// A view broadcasting size-1 dimensions to shape (stride 0; no copy).
  Tensor expand(const Shape& shape) const;
  /// A view without dimension dim if its size is 1 (else this tensor).
  Tensor squeeze(int64_t dim) const;
  /// A view without every size-1 dimension.
  Tensor squeeze() const;
  /// A view with a size-1 dimension inserted at dim.
  Tensor unsqueeze(int64_t dim) const;
  /// A view (or copy when it must) merging dimensions start..end into one.
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  /// This tensor if its strides are dense, else a dense copy.
  Tensor contiguous() const;
  /// A dense copy that keeps the autograd history.
  Tensor clone() const;
  /// Floating to integer conversion (i32, i64) truncates toward zero, as C++ and
  /// PyTorch do (2.7 -> 2, -2.7 -> -2), on every device; NaN and values outside the
  /// target's range are not defined (C++'s cast rules): clamp first. To bf16/f16: round
  /// to nearest even.
  Tensor to(DType dtype) const;
  /// A copy on device (this tensor itself if it is already there).
  Tensor to(Device device) const;

  // --- values (ops/view.cpp) ---
  double item() const;  ///< one-element tensors only
  /// The one element as T.
  template <typename T>
  T item() const { return static_cast<T>(item()); }
  std::vector<double> to_vector() const;  ///< every element, row-major, as double
  template <typename T>
  std::vector<T> to_vector_as() const;             ///< every element as T (dtype must match)
  std::string str(int64_t max_per_dim = 6) const;  ///< readable printing, truncated

  /// Sets every element to value, in place (no autograd; refused on tensors that require
  /// grad while grad mode is on).
  Tensor& fill_(double value);
  /// Sets every element to zero (as fill_).
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  ///< broadcasts src into this; converts dtype/device

  // --- autograd (autograd/variable.cpp) ---
  /// Whether autograd tracks this tensor.
  bool requires_grad() const;
  /// Marks a leaf as tracked (or not) by autograd; returns this.
  Tensor& set_requires_grad(bool r);
  const Tensor& grad() const;  ///< undefined tensor if none
  /// The gradient, for in-place updates.
  Tensor& mutable_grad();
  /// Sets the gradient to g.
  void set_grad(const Tensor& g);
  void zero_grad();  ///< drops the gradient
  /// The node that made this tensor (null for leaves and untracked tensors).
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  /// Whether this tensor is a leaf: made by the user, not by a recorded op.
  bool is_leaf() const;
  Tensor detach() const;  ///< shares storage, no history
  /// Replaces this leaf's data (storage, shape, strides, offset, dtype) by src's while
  /// keeping its identity, so every handle (a module's field, an optimizer's list) sees
  /// the new data; keeps requires_grad, drops the gradient. Moves or casts parameters.
  void set_data(const Tensor& src);
  /// Runs backward from this tensor, accumulating into each leaf's grad(). A tensor of one
  /// element needs no gradient (it is taken as 1). retain_graph keeps the saved tensors for a
  /// second backward.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

 private:
  TensorImpl& impl() const {
    HMOE_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

/// The autograd state of a tensor.
struct AutogradMeta {
  bool requires_grad = false;                      ///< whether autograd tracks the tensor
  Tensor grad;                                     ///< the accumulated gradient (leaves)
  std::shared_ptr<autograd::Node> grad_fn;         ///< null for leaves
  uint32_t output_nr = 0;                          ///< which output of grad_fn this is
  std::weak_ptr<autograd::Node> grad_accumulator;  ///< leaves: the node that fills .grad
};

/// Prints the tensor as Tensor::str does.
std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace hmoe
