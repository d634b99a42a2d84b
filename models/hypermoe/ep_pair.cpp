// make_ffn_layer and set_random_parameters: a MoE / HyperMoE layer made whole and sharded with the same values.
#include "models/hypermoe/ep_pair.h"

#include <map>

#include "autograd/grad_mode.h"
#include "engine/error.h"
#include "ops/factory.h"

namespace hmoe::model {

std::shared_ptr<MoEFFN> make_ffn_layer(const ModelConfig& cfg, bool hyper, const nn::Parallel& par, uint64_t seed) {
  Generator gen(seed);
  if (!hyper) return std::make_shared<MoEFFN>(cfg, gen, par);
  auto net = std::make_shared<HyperNetwork>(cfg, 2, gen);
  return std::make_shared<HyperMoEFFN>(cfg, 1, net, gen, par);
}

void set_random_parameters(const MoEFFN& whole, const MoEFFN& sharded, bool forced, uint64_t seed) {
  const std::map<std::string, nn::RowShard> shards = sharded.parameter_shards();
  const auto w = whole.named_parameters(), s = sharded.named_parameters();
  HMOE_CHECK(w.size() == s.size(), "set_random_parameters: the layers hold ", w.size(), " and ", s.size(),
             " parameters: not one layer's");
  NoGradGuard ng;
  Generator g(seed);
  for (size_t i = 0; i < w.size(); ++i) {
    const auto& [name, t] = w[i];
    Tensor dst = t;
    dst.copy_(normal(t.shape(), g, 0.0, name == "router.weight" ? 1.0 : 0.3));
    if (forced && name == "router.weight") {
      dst.zero_();
      dst.select(0, 0).narrow(0, 0, 1).fill_(30.0);  // expert 0 reads feature 0
    }
    const auto sh = shards.find(name);
    Tensor mine = s[i].second;
    mine.copy_(sh == shards.end() ? t : t.narrow(0, sh->second.first, mine.size(0)));
  }
}

}  // namespace hmoe::model
