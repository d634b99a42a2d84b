// Factories: argument checks, dispatch, and the requires_grad flag.
#include "ops/factory.h"

#include <cmath>

#include "ops/dispatch.h"
#include "ops/factory_kernels.h"

namespace hmoe {

HMOE_DEFINE_STUB(FillKernel, fill_stub);
HMOE_DEFINE_STUB(ArangeKernel, arange_stub);
HMOE_DEFINE_STUB(RandomKernel, random_stub);

namespace {
Tensor finish(Tensor t, const TensorOptions& opts) {
  if (opts.requires_grad) t.set_requires_grad(true);
  return t;
}
TensorOptions no_grad(TensorOptions o) { return o.with_requires_grad(false); }

template <typename V>
Tensor from_host(const std::vector<V>& values, const Shape& shape, TensorOptions opts) {
  HMOE_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor host = Tensor::empty(shape, {dtype_of<V>::value, Device::cpu()});
  if (!values.empty()) std::copy(values.begin(), values.end(), host.data_ptr<V>());
  Tensor out = host;
  if (opts.dtype != host.dtype()) out = out.to(opts.dtype);
  if (opts.device != out.device()) out = out.to(opts.device);
  return finish(out, opts);
}
}  // namespace

Tensor empty(const Shape& shape, TensorOptions opts) { return finish(Tensor::empty(shape, no_grad(opts)), opts); }

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  Tensor t = Tensor::empty(shape, no_grad(opts));
  fill_stub.get(opts.device)(t, value);
  return finish(t, opts);
}
Tensor zeros(const Shape& shape, TensorOptions opts) { return full(shape, 0.0, opts); }
Tensor ones(const Shape& shape, TensorOptions opts) { return full(shape, 1.0, opts); }

Tensor arange(double start, double end, double step, TensorOptions opts) {
  HMOE_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
             "arange: bad range start=", start, " end=", end, " step=", step);
  const int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
  Tensor t = Tensor::empty({n}, no_grad(opts));
  arange_stub.get(opts.device)(t, start, step);
  return finish(t, opts);
}
Tensor arange(int64_t end, TensorOptions opts) { return arange(0.0, double(end), 1.0, opts); }

Tensor from_vector(const std::vector<double>& v, const Shape& s, TensorOptions o) { return from_host(v, s, o); }
Tensor from_vector(const std::vector<float>& v, const Shape& s, TensorOptions o) { return from_host(v, s, o); }
Tensor from_vector(const std::vector<int64_t>& v, const Shape& s, TensorOptions o) { return from_host(v, s, o); }
Tensor from_vector(const std::vector<int32_t>& v, const Shape& s, TensorOptions o) { return from_host(v, s, o); }

Tensor uniform(const Shape& shape, Generator& gen, double lo, double hi, TensorOptions opts) {
  HMOE_CHECK(is_floating(opts.dtype), "uniform: needs a floating dtype, got ", dtype_name(opts.dtype));
  HMOE_CHECK(lo <= hi, "uniform: lo ", lo, " is above hi ", hi);
  Tensor t = Tensor::empty(shape, no_grad(opts));
  random_stub.get(opts.device)(t, RandomKind::uniform, gen.seed(), gen.advance(uint64_t(t.numel())), lo, hi);
  return finish(t, opts);
}

Tensor normal(const Shape& shape, Generator& gen, double mean, double std, TensorOptions opts) {
  HMOE_CHECK(is_floating(opts.dtype), "normal: needs a floating dtype, got ", dtype_name(opts.dtype));
  HMOE_CHECK(std >= 0, "normal: std must be non-negative, got ", std);
  Tensor t = Tensor::empty(shape, no_grad(opts));
  random_stub.get(opts.device)(t, RandomKind::normal, gen.seed(), gen.advance(uint64_t(t.numel())), mean, std);
  return finish(t, opts);
}

Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), {t.dtype(), t.device()}); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {t.dtype(), t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {t.dtype(), t.device()}); }
Tensor full_like(const Tensor& t, double v) { return full(t.shape(), v, {t.dtype(), t.device()}); }

}  // namespace hmoe
