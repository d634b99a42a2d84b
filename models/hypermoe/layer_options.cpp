// The conversions between a layer's FfnOptions and the model's ModelConfig.
#include "models/hypermoe/layer_options.h"

#include <cmath>

#include "engine/error.h"

namespace hmoe::model {

FfnOptions ffn_options(const ModelConfig& c) {
  FfnOptions o;
#define X(f) o.f = c.f;
  HMOE_FFN_SHARED_FIELDS(X)
#undef X
  o.init_std = 0.02;
  o.out_init_std = 0.02 / std::sqrt(2.0 * double(c.n_layer));
  o.router_init_std = 0.0;
  return o;
}

ModelConfig layer_config(const FfnOptions& o) {
  check_float_option("layer.init_std", o.init_std, 0, 1e3);
  check_float_option("layer.out_init_std", o.out_init_std, 0, 1e3);
  check_float_option("layer.router_init_std", o.router_init_std, 0, 1e3);
  ModelConfig c;
  c.n_layer = 1;
  c.n_head = 1;
  c.vocab_size = 0;
#define X(f) c.f = o.f;
  HMOE_FFN_SHARED_FIELDS(X)
#undef X
  validate(c);
  return c;
}

}  // namespace hmoe::model
