// The autograd members of Tensor: requires_grad, grad, grad_fn, detach, backward.
#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace hmoe {

namespace {
AutogradMeta& meta(TensorImpl* impl) {
  if (!impl->autograd) impl->autograd = std::make_unique<AutogradMeta>();
  return *impl->autograd;
}
const Tensor kUndefined;
const std::shared_ptr<autograd::Node> kNoNode;
}  // namespace

bool Tensor::requires_grad() const {
  const auto& a = impl().autograd;
  return a && a->requires_grad;
}

Tensor& Tensor::set_requires_grad(bool r) {
  HMOE_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can change requires_grad (", meta_str(),
             " is the output of ", grad_fn()->name(), "); use detach() first");
  HMOE_CHECK(!r || is_floating(dtype()), "set_requires_grad: only floating-point tensors can require gradients, got ",
             meta_str());
  meta(&impl()).requires_grad = r;
  return *this;
}

const Tensor& Tensor::grad() const {
  const auto& a = impl().autograd;
  return a ? a->grad : kUndefined;
}

Tensor& Tensor::mutable_grad() { return meta(&impl()).grad; }

void Tensor::set_grad(const Tensor& g) {
  HMOE_CHECK(!g.defined() || g.shape() == shape(), "set_grad: gradient ", g.meta_str(), " does not match tensor ",
             meta_str());
  meta(&impl()).grad = g;
}

void Tensor::zero_grad() {
  if (impl().autograd) impl().autograd->grad = Tensor();
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  const auto& a = impl().autograd;
  return a ? a->grad_fn : kNoNode;
}

bool Tensor::is_leaf() const { return grad_fn() == nullptr; }

Tensor Tensor::detach() const {
  return Tensor(std::make_shared<TensorImpl>(storage(), shape(), strides(), offset(), dtype()));
}

void Tensor::set_data(const Tensor& src) {
  HMOE_CHECK(src.defined(), "set_data: the new data is an undefined tensor (for ", meta_str(), ")");
  HMOE_CHECK(is_leaf() && src.is_leaf(), "set_data: only leaf tensors can have their data replaced (", meta_str(),
             " <- ", src.meta_str(), ")");
  HMOE_CHECK(!requires_grad() || is_floating(src.dtype()), "set_data: ", meta_str(),
             " requires grad, so its new data must be floating point, got ", src.meta_str());
  TensorImpl& t = impl();
  const TensorImpl& s = *src.unsafe_impl();
  t.storage = s.storage;
  t.shape = s.shape;
  t.strides = s.strides;
  t.offset = s.offset;
  t.dtype = s.dtype;
  zero_grad();
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  HMOE_CHECK(requires_grad(), "backward: tensor ", meta_str(), " does not require grad and has no grad_fn");
  Tensor g = gradient;
  if (!g.defined()) {
    HMOE_CHECK(numel() == 1, "backward: a gradient can be created implicitly only for one-element outputs; ",
               meta_str(), " needs an explicit gradient");
    g = autograd::ops_seam::ones(shape(), dtype(), device());
  }
  HMOE_CHECK(g.shape() == shape(), "backward: gradient ", g.meta_str(), " does not match output ", meta_str());
  autograd::run_backward({*this}, {g}, retain_graph);
}

}  // namespace hmoe
