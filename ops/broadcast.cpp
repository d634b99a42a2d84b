// sum_to and scalar_like (ops/broadcast.h).
#include "ops/broadcast.h"

#include <cmath>
#include <vector>

#include "engine/error.h"
#include "ops/factory.h"
#include "ops/reduce.h"

namespace hmoe {

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - int64_t(shape.size());
  HMOE_CHECK(lead >= 0, "sum_to: cannot reduce ", g.meta_str(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < g.dim(); ++d)
    if (d < lead || (shape[size_t(d - lead)] == 1 && g.size(d) != 1)) dims.push_back(d);
  Tensor r = dims.empty() ? g : sum(g, dims, /*keepdim=*/true);
  return r.reshape(shape);
}

Tensor scalar_like(double s, const Tensor& like) {
  DType dt = like.dtype();
  if (!is_floating(dt) && std::floor(s) != s) dt = DType::f32;
  return full({}, s, {dt, like.device()});
}

}  // namespace hmoe
