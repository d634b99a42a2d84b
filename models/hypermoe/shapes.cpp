// Each module's parameter shapes from the model config, and the parameter count.
#include "models/hypermoe/shapes.h"

#include <algorithm>

namespace hmoe::model {

AttentionShapes attention_shapes(const ModelConfig& c) {
  const int64_t d = c.d_model;
  return {{d, checked_mul(3, d, "model: 3 x d_model"), true}, {d, d, true}};
}

DenseFfnShapes dense_ffn_shapes(const ModelConfig& c) { return {{c.d_model, c.d_ff, true}, {c.d_ff, c.d_model, true}}; }

MoEShapes moe_shapes(const ModelConfig& c) {
  const int64_t N = c.n_experts, d = c.d_model, f = c.d_ff;
  MoEShapes s{{d, N, false}, std::nullopt, {N, d, f}, {N, f}, {N, f, d}, {N, d}};
  if (c.router == RouterKind::topk && c.noisy) s.noise = nn::LinearShape{d, N, false};
  return s;
}

HyperExpertShapes hyper_expert_shapes(const ModelConfig& c) {
  return {{c.n_experts, c.expert_emb_dim},
          {c.expert_emb_dim, c.selection_hidden, true},
          {c.selection_hidden, c.hyper_in, true}};
}

HyperNetworkShapes hypernetwork_shapes(const ModelConfig& c, int64_t n_moe_layers) {
  const int64_t b = c.hyper_hidden, d = c.d_model, r = c.adapter_rank;
  return {{n_moe_layers, c.layer_emb_dim},
          {checked_add(c.hyper_in, c.layer_emb_dim, "model: hyper_in + layer_emb_dim"), b, true},
          {b, checked_mul(d, r, "model: d_model x adapter_rank"), true},
          {b, checked_mul(r, d, "model: adapter_rank x d_model"), true},
          {b, r, true},
          {b, d, true}};
}

LmShapes lm_shapes(const ModelConfig& c) {
  LmShapes s{{c.vocab_size, c.d_model}, {c.block_size, c.d_model}, c.d_model, {}};
  for (int64_t i = 0; i < c.n_layer; ++i) s.blocks.push_back(layer_is_moe(c, i) ? c.ffn : FfnKind::dense);
  return s;
}

int64_t LmShapes::moe_layers() const {
  return std::count_if(blocks.begin(), blocks.end(), [](FfnKind k) { return k != FfnKind::dense; });
}

bool LmShapes::has_hypernetwork() const {
  return std::find(blocks.begin(), blocks.end(), FfnKind::hypermoe) != blocks.end();
}

int64_t count_parameters(const ModelConfig& c) {
  // Every sum and product checked: the sizes come from configs and files.
  const LmShapes lm = lm_shapes(c);
  const int64_t norm = checked_mul(2, lm.norm, "model: parameter count");  // LayerNorm: weight and bias
  const int64_t moe = moe_shapes(c).numel();
  const int64_t ffn[] = {dense_ffn_shapes(c).numel(), moe, sum_counts({moe, hyper_expert_shapes(c).numel()})};
  const int64_t block = sum_counts({norm, norm, attention_shapes(c).numel()});
  int64_t n = sum_counts({shape_numel(lm.wte), shape_numel(lm.wpe), norm});
  for (FfnKind k : lm.blocks) n = sum_counts({n, block, ffn[size_t(k)]});  // ffn by FfnKind
  if (lm.has_hypernetwork()) n = sum_counts({n, hypernetwork_shapes(c, lm.moe_layers()).numel()});
  return n;
}

}  // namespace hmoe::model
