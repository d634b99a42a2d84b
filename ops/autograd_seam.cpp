// The tensor operations the autograd engine needs, provided by the ops layer.
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/factory.h"

namespace hmoe::autograd::ops_seam {

Tensor zeros(const Shape& shape, DType dtype, Device device) { return hmoe::zeros(shape, {dtype, device}); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return hmoe::ones(shape, {dtype, device}); }
Tensor add(const Tensor& a, const Tensor& b) { return hmoe::add(a, b); }
void add_into(const Tensor& dst, const Tensor& src) { hmoe::add_(dst, src); }
Tensor to_dtype(const Tensor& t, DType dtype) { return t.to(dtype); }
Tensor clone(const Tensor& t) { return t.clone(); }

}  // namespace hmoe::autograd::ops_seam
