/// @file
/// The feed-forward sub-layers of a block: dense GELU MLP, MoE (router + N experts
/// run with the grouped GEMM), and HyperMoE (MoE plus the HyperExpert whose adapter
/// is generated, once per distinct selection pattern, by the model-wide hypernetwork).
/// Each is built from FfnOptions (a layer on its own) or from a model's ModelConfig
/// (what the language model builds: ffn_options of it).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "engine/rng.h"
#include "models/hypermoe/adapter_cache.h"
#include "models/hypermoe/config.h"
#include "models/hypermoe/layer_options.h"
#include "models/nn/layers.h"
#include "models/nn/module.h"
#include "models/nn/parallel.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"

namespace hmoe::model {

/// What the FFNs of one forward pass report besides their output.
struct FfnStats {
  Tensor aux_loss;                                  ///< weighted sum of router aux losses (0-d f32), undefined if none
  std::vector<std::vector<int64_t>> expert_counts;  ///< per MoE layer: tokens per expert
  /// Adds l to aux_loss (which it defines if undefined).
  void add_aux(const Tensor& l);
};

/// The interface of the FFN sub-layers (DenseFFN, MoEFFN, HyperMoEFFN).
class FeedForward : public nn::Module {
 public:
  /// x: [T, d] (normalised) -> [T, d]. noise: router noise and jitter in training.
  virtual Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) = 0;
  /// The same without a Generator, for a layer that draws nothing (in eval, or one with
  /// no router noise or jitter): else an hmoe::Error saying to pass one or call eval().
  Tensor forward(const Tensor& x, FfnStats& stats);
  Tensor forward(const Tensor& x);  ///< the aux losses and expert counts dropped
  /// Whether forward draws random numbers in the current mode.
  virtual bool draws_noise() const { return false; }
};

/// The dense FFN: proj(gelu(fc(x))).
class DenseFFN : public FeedForward {
 public:
  /// fc [d_model -> d_ff] ~ N(0, init_std), proj [d_ff -> d_model] ~ N(0, out_init_std).
  DenseFFN(const FfnOptions& o, Generator& gen);
  /// The layer a model of cfg builds (ffn_options(cfg)).
  DenseFFN(const ModelConfig& cfg, Generator& gen) : DenseFFN(ffn_options(cfg), gen) {}
  using FeedForward::forward;
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) override;

 private:
  std::shared_ptr<nn::Linear> fc_, proj_;
};

/// One per model: z = [s, LayerEmb[l]] -> h = ReLU(Wh z + bh) -> the four heads.
class HyperNetwork : public nn::Module {
 public:
  /// The hypernetwork of a model of cfg with embeddings for n_moe_layers MoE layers.
  HyperNetwork(const ModelConfig& cfg, int64_t n_moe_layers, Generator& gen);
  /// The same from one layer's options.
  HyperNetwork(const FfnOptions& o, int64_t n_moe_layers, Generator& gen)
      : HyperNetwork(layer_config(o), n_moe_layers, gen) {}
  /// s: [P, hyper_in] selection embeddings of layer `layer`.
  AdapterWeights generate(const Tensor& s, int64_t layer);
  int64_t layers() const { return layer_emb_.size(0); }  ///< the MoE layers it has embeddings for

 private:
  int64_t d_, r_;
  Tensor layer_emb_;  ///< [L, layer_emb_dim]
  std::shared_ptr<nn::Linear> wh_, head_down_, head_up_, head_bdown_, head_bup_;
};

/// The MoE layer: a router (top-k or Switch) and N experts run with the grouped FFN.
///
/// With par.experts_sharded(), this rank holds a contiguous block of the experts (its w1,
/// b1, w2, b2 are those rows, registered as RowShards of the whole) and its tokens reach
/// the other blocks through par.ep; the routers and their aux-loss statistics are over the
/// whole batch (par.world), so the layer computes what one process computes on it.
class MoEFFN : public FeedForward {
 public:
  /// The router [d_model -> N] ~ N(0, router_init_std) (zeros for 0: see FfnOptions), the
  /// noise projection zeros, the experts' w1 ~ N(0, init_std), w2 ~ N(0, out_init_std).
  MoEFFN(const FfnOptions& o, Generator& gen, const nn::Parallel& par = {});
  /// The layer a model of cfg builds (ffn_options(cfg)).
  MoEFFN(const ModelConfig& cfg, Generator& gen, const nn::Parallel& par = {}) : MoEFFN(ffn_options(cfg), gen, par) {}
  using FeedForward::forward;
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) override;
  bool draws_noise() const override;

 protected:
  /// The router's choice for x and its plan (aux losses and expert counts go to stats).
  struct Routing {
    moe::RouterOutput r;  ///< the router's output
    moe::Plan plan;       ///< the plan of the routed tokens
  };
  /// Routes x: the router's choice and its plan (aux losses and expert counts go to stats).
  Routing route(const Tensor& x, FfnStats& stats, Generator& noise);
  /// The experts' combined output [T, d] (tokens over capacity pass p_max * x). meanwhile
  /// (optional) runs first, or, with the experts sharded over nccl, while the tokens travel
  /// to them (and its backward while their gradients travel back).
  Tensor run_experts(const Tensor& x, const Routing& rt, const std::function<void()>& meanwhile = {});

  const ModelConfig cfg_;   ///< layer_config of the options: what the router and shapes read
  const nn::Parallel par_;  ///< how the model is spread over processes
  /// @{
  /// The router's projection [d -> N] and the noisy router's noise projection (null without noise).
  std::shared_ptr<nn::Linear> router_, noise_;
  /// @}
  /// @{
  /// The experts' weights and biases.
  Tensor w1_, b1_, w2_, b2_;  ///< [E, d, d_ff], [E, d_ff], [E, d_ff, d], [E, d]: this rank's E experts
                              /// @}

 private:
  /// run_experts with the experts on the ranks of par_.ep: rows out, the grouped FFN over
  /// the local experts, rows back.
  Tensor run_experts_sharded(const Tensor& x, const Routing& rt, const std::function<void()>& meanwhile);
  /// Sums a per-rank router statistic over the world (unset in one process).
  moe::RankSum over_ranks() const;
  /// Switch's capacity over the whole batch (a world of several ranks): the tokens over it.
  Tensor batch_capacity_drops(const Tensor& expert_ids) const;
};

/// The HyperMoE layer: the MoE layer plus the HyperExpert, an adapter generated by the
/// hypernetwork for each token's selection pattern from the embeddings of the experts it
/// did not select.
///
/// The hypernetwork is a submodule ("hyper") of every layer that uses it. Given none, the
/// layer builds its own (embeddings for moe_layer + 1 layers) after its other parameters;
/// a model passes the one it shares, registered at its top first so that its state dict
/// lists it once (see nn::Module on shared submodules).
class HyperMoEFFN : public MoEFFN {
 public:
  /// A layer on its own (it builds its hypernetwork unless given one); moe_layer selects
  /// its layer embedding.
  explicit HyperMoEFFN(const FfnOptions& o, Generator& gen, int64_t moe_layer = 0,
                       std::shared_ptr<HyperNetwork> hyper = nullptr, const nn::Parallel& par = {});
  /// The layer a model of cfg builds, with the model's shared hypernetwork.
  HyperMoEFFN(const ModelConfig& cfg, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper, Generator& gen,
              const nn::Parallel& par = {})
      : HyperMoEFFN(ffn_options(cfg), gen, moe_layer, std::move(hyper), par) {}
  using FeedForward::forward;
  Tensor forward(const Tensor& x, FfnStats& stats, Generator& noise) override;
  /// The hypernetwork (registered as "hyper").
  const std::shared_ptr<HyperNetwork>& hypernetwork() const { return hyper_; }
  /// The HyperExpert's output for given hard selections (used by tests too).
  Tensor hyper_expert(const Tensor& x, const Tensor& expert_ids);
  /// The same, materialising each token's adapter as the reference implementation does.
  Tensor hyper_expert_per_token(const Tensor& x, const Tensor& expert_ids);
  /// For a model nobody changes any more (infer::Model): each selection pattern's adapter
  /// is generated once and reused by every later forward without gradients (exact: an
  /// adapter depends only on the weights and the pattern). A forward with gradients is
  /// then an error, as training would leave the cached adapters stale.
  void cache_adapters();
  /// How many selection patterns' adapters are cached (0 without cache_adapters()).
  size_t cached_adapters() const { return adapter_cache_ ? adapter_cache_->size() : 0; }

 private:
  /// s for each distinct selection pattern: [P, hyper_in] from the unselected-expert mask [P, N].
  Tensor selection_embedding(const Tensor& unselected_mask);

  int64_t layer_;
  std::shared_ptr<HyperNetwork> hyper_;  ///< registered here as "hyper"; may be shared with other layers
  Tensor expert_emb_;                    ///< [N, e]
  std::shared_ptr<nn::Linear> sel1_, sel2_;
  std::unique_ptr<AdapterCache> adapter_cache_;  // set by cache_adapters()
};

}  // namespace hmoe::model
