// Standard layers on the ops of ops/.
#include "models/nn/layers.h"

#include <cmath>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/nn.h"

namespace hmoe::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator& gen) {
  HMOE_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got ", in, " -> ", out);
  const double a = 1.0 / std::sqrt(double(in));
  weight = register_parameter("weight", uniform({out, in}, gen, -a, a));
  if (with_bias) bias = register_parameter("bias", uniform({out}, gen, -a, a));
}
Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen) {
  HMOE_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive");
  weight = register_parameter("weight", normal({num, dim}, gen));
}
Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight, ids); }

LayerNorm::LayerNorm(int64_t dim, double e, bool with_bias) : eps(e) {
  weight = register_parameter("weight", ones({dim}));
  if (with_bias) bias = register_parameter("bias", zeros({dim}));
}
Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double e) : eps(e) { weight = register_parameter("weight", ones({dim})); }
Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight, eps); }

MLP::MLP(int64_t in, int64_t hidden, int64_t out, Generator& gen) {
  fc = register_module("fc", std::make_shared<Linear>(in, hidden, true, gen));
  proj = register_module("proj", std::make_shared<Linear>(hidden, out, true, gen));
}
Tensor MLP::forward(const Tensor& x) const { return proj->forward(gelu(fc->forward(x))); }

}  // namespace hmoe::nn
