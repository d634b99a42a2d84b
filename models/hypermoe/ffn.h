// The feed-forward sub-layers of a block: dense GELU MLP, MoE (router + N experts
// run with the grouped GEMM), and HyperMoE (MoE plus the HyperExpert whose adapter
// is generated, once per distinct selection pattern, by the model-wide hypernetwork).
#pragma once

#include <memory>
#include <vector>

#include "engine/rng.h"
#include "models/hypermoe/config.h"
#include "models/nn/layers.h"
#include "models/nn/module.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"

namespace hmoe::model {

// What the FFNs of one forward pass report besides their output.
struct FfnStats {
  Tensor aux_loss;  // weighted sum of router aux losses (0-d f32), undefined if none
  std::vector<std::vector<int64_t>> expert_counts;  // per MoE layer: tokens per expert
  void add_aux(const Tensor& l);
};

class FeedForward : public nn::Module {
 public:
  // x: [T, d] (normalised). noise: router noise in training.
  virtual Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) = 0;
};

class DenseFFN : public FeedForward {
 public:
  DenseFFN(const ModelConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) override;

 private:
  std::shared_ptr<nn::Linear> fc_, proj_;
};

// The adapter weights generated for P selection patterns of one layer.
struct AdapterWeights {
  Tensor w_down;  // [P, d, r]
  Tensor b_down;  // [P, r]
  Tensor w_up;    // [P, r, d]
  Tensor b_up;    // [P, d]
};

// One per model: z = [s, LayerEmb[l]] -> h = ReLU(Wh z + bh) -> the four heads.
class HyperNetwork : public nn::Module {
 public:
  HyperNetwork(const ModelConfig& cfg, int64_t n_moe_layers, Generator& gen);
  // s: [P, hyper_in] selection embeddings of layer `layer`.
  AdapterWeights generate(const Tensor& s, int64_t layer);

 private:
  int64_t d_, r_;
  Tensor layer_emb_;  // [L, layer_emb_dim]
  std::shared_ptr<nn::Linear> wh_, head_down_, head_up_, head_bdown_, head_bup_;
};

class MoEFFN : public FeedForward {
 public:
  MoEFFN(const ModelConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) override;

 protected:
  // The router's choice for x and its plan (aux losses and expert counts go to stats).
  struct Routing {
    moe::RouterOutput r;
    moe::Plan plan;
  };
  Routing route(const Tensor& x, FfnStats& stats, Generator& noise);
  // The experts' combined output [T, d] (tokens over capacity pass p_max * x).
  Tensor run_experts(const Tensor& x, const Routing& rt);

  const ModelConfig cfg_;
  std::shared_ptr<nn::Linear> router_, noise_;
  Tensor w1_, b1_, w2_, b2_;  // [N, d, d_ff], [N, d_ff], [N, d_ff, d], [N, d]
};

class HyperMoEFFN : public MoEFFN {
 public:
  HyperMoEFFN(const ModelConfig& cfg, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper, Generator& gen);
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) override;
  // The HyperExpert's output for given hard selections (used by tests too).
  Tensor hyper_expert(const Tensor& x, const Tensor& expert_ids);
  // The same, materialising each token's adapter as the reference implementation does.
  Tensor hyper_expert_per_token(const Tensor& x, const Tensor& expert_ids);

 private:
  // s for each distinct selection pattern: [P, hyper_in] from the unselected-expert mask [P, N].
  Tensor selection_embedding(const Tensor& unselected_mask);

  int64_t layer_;
  std::shared_ptr<HyperNetwork> hyper_;  // shared; registered by the model, not here
  Tensor expert_emb_;                    // [N, e]
  std::shared_ptr<nn::Linear> sel1_, sel2_;
};

}  // namespace hmoe::model
