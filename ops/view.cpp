// The Tensor members for views and copies, each differentiable, plus item, printing
// and the in-place fill/copy used under no-grad (initialisers, optimisers).
#include "ops/view.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/factory_kernels.h"
#include "ops/view_kernels.h"

namespace hmoe {

namespace {
KernelWork copy_work(const Tensor& src, const Tensor& dst) {  // cost model (ops/dispatch.h)
  return {0.0, ops::distinct_bytes(src) + ops::distinct_bytes(dst)};
}
}  // namespace
HMOE_DEFINE_STUB_WITH_WORK(CopyKernel, copy_stub, &copy_work);

using autograd::record;

Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      HMOE_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      HMOE_CHECK(out[i] >= 0, op, ": bad dimension ", out[i], " in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    HMOE_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(shape), " is invalid for ", numel,
               " elements");
    out[size_t(infer)] = numel / known;
  }
  HMOE_CHECK(shape_numel(out) == numel, op, ": shape ", shape_str(shape), " is invalid for ", numel, " elements");
  return out;
}

bool view_strides(const Tensor& t, const Shape& shape, Shape& out) {
  // Walk both shapes in chunks of equal element count; each chunk of the old shape
  // must be contiguous in itself for the view to exist.
  out.assign(shape.size(), 0);
  if (t.numel() == 0) {
    out = contiguous_strides(shape);
    return true;
  }
  const Shape& os = t.shape();
  const Shape& ost = t.strides();
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_base_stride = ost.empty() ? 1 : ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t td = int64_t(os.size()) - 1; td >= 0; --td) {
    tensor_numel *= os[size_t(td)];
    if (td == 0 || (os[size_t(td - 1)] != 1 && ost[size_t(td - 1)] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[size_t(view_d)] == 1)) {
        out[size_t(view_d)] = view_numel * chunk_base_stride;
        view_numel *= shape[size_t(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) {
        chunk_base_stride = ost[size_t(td - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  for (; view_d >= 0; --view_d) out[size_t(view_d)] = 1;  // trailing size-1 dims
  return true;
}

Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  return Tensor::make_view(t, shape, strides, offset);
}

namespace {
// Records a view op whose backward maps the output gradient back to the input shape.
Tensor view_op(const char* name, const Tensor& in, Tensor out, autograd::BackwardFn bw) {
  record(name, {in}, {out}, std::move(bw));
  return out;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel(), "view");
  Shape st;
  HMOE_CHECK(view_strides(*this, s, st), "view: ", meta_str(), " with strides ", shape_str(strides()),
             " cannot be viewed as ", shape_str(s), " without a copy; use reshape()");
  return view_op("view", *this, make_view(*this, s, st, offset()), [in = this->shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(in)};
  });
}

Tensor Tensor::reshape(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel(), "reshape");
  Shape st;
  if (view_strides(*this, s, st)) return view(s);
  return contiguous().view(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  HMOE_CHECK(int64_t(dims.size()) == dim(), "permute: ", dims.size(), " dims given for ", meta_str());
  Shape sh(dims.size()), st(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    HMOE_CHECK(inverse[size_t(d)] < 0, "permute: dim ", d, " repeated for ", meta_str());
    inverse[size_t(d)] = int64_t(i);
    sh[i] = shape()[size_t(d)];
    st[i] = strides()[size_t(d)];
  }
  return view_op("permute", *this, make_view(*this, sh, st, offset()), [inverse](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].permute(inverse)};
  });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(static_cast<size_t>(dim()));
  std::iota(p.begin(), p.end(), 0);
  if (dim() == 0) return permute(p);
  std::swap(p[size_t(wrap_dim(d0, dim(), "transpose"))], p[size_t(wrap_dim(d1, dim(), "transpose"))]);
  return permute(p);
}

Tensor Tensor::t() const {
  HMOE_CHECK(dim() == 2, "t: needs a 2-d tensor, got ", meta_str());
  return transpose(0, 1);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  HMOE_CHECK(dim() > 0, "slice: cannot slice a 0-d tensor");
  HMOE_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = shape()[size_t(d)];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sh = shape(), st = strides();
  sh[size_t(d)] = (end - start + step - 1) / step;
  st[size_t(d)] *= step;
  return view_op("slice", *this, make_view(*this, sh, st, offset() + start * strides()[size_t(d)]),
                 [in = shape(), d, start, end, step](const std::vector<Tensor>& g) {
                   Tensor gi = zeros(in, {g[0].dtype(), g[0].device()});
                   gi.slice(d, start, end, step).copy_(g[0]);
                   return std::vector<Tensor>{gi};
                 });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  const int64_t n = size(d);
  if (start < 0) start += n;
  HMOE_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
             ") is outside dim ", d, " of ", meta_str());
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  HMOE_CHECK(dim() > 0, "select: cannot select from a 0-d tensor");
  const int64_t n = size(d);
  HMOE_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", d, " of ", meta_str());
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& shape) const {
  HMOE_CHECK(shape.size() >= size_t(dim()), "expand: cannot expand ", meta_str(), " to fewer dims ",
             shape_str(shape));
  Shape sh = shape, st(shape.size(), 0);
  const size_t lead = shape.size() - size_t(dim());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      HMOE_CHECK(shape[i] >= 0, "expand: bad size ", shape[i], " in ", shape_str(shape));
      continue;
    }
    const int64_t have = this->shape()[i - lead];
    if (sh[i] == -1) sh[i] = have;
    HMOE_CHECK(have == sh[i] || have == 1, "expand: cannot expand ", meta_str(), " to ", shape_str(shape));
    st[i] = have == sh[i] ? strides()[i - lead] : 0;
  }
  if (sh == this->shape()) return *this;
  return view_op("expand", *this, make_view(*this, sh, st, offset()), [in = this->shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], in)};
  });
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (dim() == 0 || size(d) != 1) return *this;
  Shape sh = shape(), st = strides();
  sh.erase(sh.begin() + d);
  st.erase(st.begin() + d);
  return view_op("squeeze", *this, make_view(*this, sh, st, offset()), [in = shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(in)};
  });
}

Tensor Tensor::squeeze() const {
  Shape sh;
  for (int64_t s : shape())
    if (s != 1) sh.push_back(s);
  return reshape(sh);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape sh = shape(), st = strides();
  const int64_t s = d < dim() ? strides()[size_t(d)] * shape()[size_t(d)] : 1;
  sh.insert(sh.begin() + d, 1);
  st.insert(st.begin() + d, s);
  return view_op("unsqueeze", *this, make_view(*this, sh, st, offset()), [in = shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(in)};
  });
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  HMOE_CHECK(start <= end, "flatten: start dim ", start, " is after end dim ", end);
  Shape sh(shape().begin(), shape().begin() + start);
  int64_t n = 1;
  for (int64_t d = start; d <= end; ++d) n *= shape()[size_t(d)];
  sh.push_back(n);
  sh.insert(sh.end(), shape().begin() + end + 1, shape().end());
  return reshape(sh);
}

namespace {
// A copy that converts dtype and/or device, recorded as differentiable for floats.
Tensor copy_op(const Tensor& src, DType dtype, Device device) {
  Tensor out = Tensor::empty(src.shape(), {dtype, device});
  if (device == src.device()) {
    copy_stub.get(device)(src.detach(), out);
  } else {
    // Cross-device: make a contiguous copy of the right dtype on the source side,
    // then move the bytes.
    Tensor staged = src.dtype() == dtype && src.is_contiguous() ? src : copy_op(src.detach(), dtype, src.device());
    Allocator& a = allocator_for(device.is_cpu() ? src.device().type : device.type);
    a.copy(out.data_ptr<void>(), device, staged.data_ptr<void>(), src.device(), out.nbytes());
  }
  if (is_floating(dtype) && is_floating(src.dtype())) {
    record("copy", {src}, {out}, [sd = src.dtype(), sdev = src.device()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{(g[0].dtype() == sd && g[0].device() == sdev) ? g[0] : copy_op(g[0], sd, sdev)};
    });
  }
  return out;
}
}  // namespace

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : copy_op(*this, dtype(), device()); }
Tensor Tensor::clone() const { return copy_op(*this, dtype(), device()); }
Tensor Tensor::to(DType dt) const { return dt == dtype() ? *this : copy_op(*this, dt, device()); }
Tensor Tensor::to(Device dev) const { return dev == device() ? *this : copy_op(*this, dtype(), dev); }

namespace {
void check_inplace(const Tensor& t, const char* op) {
  HMOE_CHECK(!(autograd::grad_enabled() && t.requires_grad()), op, ": in-place write to ", t.meta_str(),
             " which requires grad; do it under NoGradGuard (or detach)");
}
}  // namespace

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_");
  fill_stub.get(device())(*this, value);
  storage()->bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  Tensor s = src.expand(shape());
  if (s.device() != device()) s = s.to(device());
  copy_stub.get(device())(s.detach(), *this);
  storage()->bump_version();
  return *this;
}

double Tensor::item() const {
  HMOE_CHECK(numel() == 1, "item: needs a one-element tensor, got ", meta_str());
  Tensor c = to(Device::cpu()).to(DType::f64).contiguous();
  return *c.data_ptr<double>();
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = detach().to(Device::cpu()).to(DType::f64).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

template <typename T>
std::vector<T> Tensor::to_vector_as() const {
  HMOE_CHECK(dtype_of<T>::value == dtype(), "to_vector_as: tensor holds ", dtype_name(dtype()));
  Tensor c = detach().to(Device::cpu()).contiguous();
  const T* p = c.data_ptr<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector_as<float>() const;
template std::vector<double> Tensor::to_vector_as<double>() const;
template std::vector<int32_t> Tensor::to_vector_as<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector_as<int64_t>() const;
template std::vector<bool> Tensor::to_vector_as<bool>() const;

std::string Tensor::str(int64_t max_per_dim) const {
  std::ostringstream os;
  os << "tensor(";
  Tensor c = detach().to(Device::cpu()).to(DType::f64).contiguous();
  const double* p = c.data_ptr<double>();
  const bool integral = !is_floating(dtype());
  max_per_dim = std::max<int64_t>(max_per_dim, 2);
  // Prints dims recursively; long dims show their first and last max/2 entries.
  std::function<void(int64_t, int64_t)> rec = [&](int64_t d, int64_t base) {
    if (d == dim()) {
      if (integral) os << int64_t(p[base]);
      else os << std::setprecision(5) << p[base];
      return;
    }
    const int64_t n = shape()[size_t(d)];
    const int64_t stride = c.strides()[size_t(d)];
    os << '[';
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == max_per_dim / 2) {
        os << "..., ";
        i = n - max_per_dim / 2;
      }
      rec(d + 1, base + i * stride);
      if (i + 1 < n) os << (d + 1 == dim() ? ", " : ",\n" + std::string(size_t(d + 8), ' '));
    }
    os << ']';
  };
  if (numel() > 0 || dim() == 0) rec(0, 0);
  else os << "[]";
  os << ", " << dtype_name(dtype()) << shape_str(shape());
  if (!device().is_cpu()) os << ", " << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ')';
  return os.str();
}

}  // namespace hmoe
