// Dense, MoE and HyperMoE feed-forward layers and the shared hypernetwork.
#include "models/hypermoe/ffn.h"

#include <cmath>

#include "engine/profiler.h"
#include "models/hypermoe/shapes.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"
#include "ops/nn.h"
#include "ops/reduce.h"

namespace hmoe::model {

void FfnStats::add_aux(const Tensor& l) { aux_loss = aux_loss.defined() ? aux_loss + l : l; }

namespace {
void init_normal(Tensor& t, Generator& gen, double std) {
  NoGradGuard ng;
  t.copy_(normal(t.shape(), gen, 0.0, std));
}
Tensor param(nn::Module& m, const std::string& name, const Shape& shape, Generator& gen, double std) {
  Tensor t = zeros(shape);
  if (std > 0) init_normal(t, gen, std);
  return m.register_parameter(name, t);
}
// U(-a, a) for the hypernetwork heads ("hyperfanin").
void init_uniform(const Tensor& t, Generator& gen, double a) {
  NoGradGuard ng;
  Tensor d = t;
  d.copy_(uniform(t.shape(), gen, -a, a));
}
}  // namespace

DenseFFN::DenseFFN(const ModelConfig& cfg, Generator& gen) {
  const DenseFfnShapes s = dense_ffn_shapes(cfg);
  fc_ = register_module("fc", std::make_shared<nn::Linear>(s.fc, gen));
  proj_ = register_module("proj", std::make_shared<nn::Linear>(s.proj, gen));
  init_normal(fc_->weight, gen, 0.02);
  init_normal(proj_->weight, gen, 0.02 / std::sqrt(2.0 * double(cfg.n_layer)));
  NoGradGuard ng;
  fc_->bias.zero_();
  proj_->bias.zero_();
}

Tensor DenseFFN::forward(const Tensor& x, FfnStats&, Generator&) { return proj_->forward(gelu(fc_->forward(x))); }

HyperNetwork::HyperNetwork(const ModelConfig& c, int64_t n_moe_layers, Generator& gen)
    : d_(c.d_model), r_(c.adapter_rank) {
  const HyperNetworkShapes s = hypernetwork_shapes(c, n_moe_layers);
  const int64_t b = c.hyper_hidden;
  layer_emb_ = param(*this, "layer_emb", s.layer_emb, gen, 1.0);
  wh_ = register_module("wh", std::make_shared<nn::Linear>(s.wh, gen));
  head_down_ = register_module("head_down", std::make_shared<nn::Linear>(s.head_down, gen));
  head_up_ = register_module("head_up", std::make_shared<nn::Linear>(s.head_up, gen));
  head_bdown_ = register_module("head_bdown", std::make_shared<nn::Linear>(s.head_bdown, gen));
  head_bup_ = register_module("head_bup", std::make_shared<nn::Linear>(s.head_bup, gen));
  // Hyperfanin: the generated adapter starts near zero, so training starts from the plain MoE.
  init_uniform(head_up_->weight, gen, 1e-3 * std::sqrt(3.0 / double(b * r_)));
  init_uniform(head_down_->weight, gen, 1e-3 * std::sqrt(3.0 / double(b * d_)));
  init_uniform(head_bdown_->weight, gen, 1e-3 * std::sqrt(3.0 / double(b)));
  init_uniform(head_bup_->weight, gen, 1e-3 * std::sqrt(3.0 / double(b)));
  NoGradGuard ng;
  for (auto* h : {head_down_.get(), head_up_.get(), head_bdown_.get(), head_bup_.get()}) h->bias.zero_();
}

AdapterWeights HyperNetwork::generate(const Tensor& s, int64_t layer) {
  const int64_t P = s.size(0);
  Tensor z = cat({s, layer_emb_.select(0, layer).unsqueeze(0).expand({P, layer_emb_.size(1)})}, 1);
  Tensor h = relu(wh_->forward(z));
  return {head_down_->forward(h).reshape({P, d_, r_}), head_bdown_->forward(h),
          head_up_->forward(h).reshape({P, r_, d_}), head_bup_->forward(h)};
}

MoEFFN::MoEFFN(const ModelConfig& cfg, Generator& gen) : cfg_(cfg) {
  const MoEShapes s = moe_shapes(cfg);
  router_ = register_module("router", std::make_shared<nn::Linear>(s.router, gen));
  {
    NoGradGuard ng;
    router_->weight.zero_();  // zero-initialised as in the reference
  }
  if (s.noise) {
    noise_ = register_module("noise", std::make_shared<nn::Linear>(*s.noise, gen));
    NoGradGuard ng;
    noise_->weight.zero_();
  }
  w1_ = param(*this, "w1", s.w1, gen, 0.02);
  b1_ = param(*this, "b1", s.b1, gen, 0.0);
  w2_ = param(*this, "w2", s.w2, gen, 0.02 / std::sqrt(2.0 * double(cfg.n_layer)));
  b2_ = param(*this, "b2", s.b2, gen, 0.0);
}

MoEFFN::Routing MoEFFN::route(const Tensor& x, FfnStats& stats, Generator& noise) {
  const ProfileScope scope("moe_router", x.device());
  const int64_t N = cfg_.n_experts;
  Tensor xin = x;
  if (cfg_.router == RouterKind::switch_ && is_training() && cfg_.jitter > 0)
    xin = x * uniform(x.shape(), noise, 1.0 - cfg_.jitter, 1.0 + cfg_.jitter, {x.dtype(), x.device()});
  Tensor logits = router_->forward(xin).to(DType::f32);
  const Tensor clean = logits;  // the smooth load of the cv loss compares them with the noisy ones
  Tensor noise_std;
  if (noise_ && is_training()) {
    noise_std = softplus(noise_->forward(x).to(DType::f32)) + 0.01;
    logits = logits + normal(logits.shape(), noise, 0.0, 1.0, {DType::f32, logits.device()}) * noise_std;
  }
  moe::RouterConfig rc;
  rc.k = cfg_.top_k;
  rc.renormalize = cfg_.renormalize;
  rc.capacity_factor = cfg_.capacity_factor;
  moe::RouterOutput r = moe::route(logits, rc);
  if (cfg_.aux_cv_coef > 0) stats.add_aux(moe::cv_squared_loss(r, noise_std, clean) * cfg_.aux_cv_coef);
  if (cfg_.aux_lb_coef > 0) stats.add_aux(moe::load_balancing_loss(r) * cfg_.aux_lb_coef);
  if (cfg_.aux_z_coef > 0) stats.add_aux(moe::router_z_loss(logits) * cfg_.aux_z_coef);

  moe::Plan plan = moe::make_plan(r.expert_ids, N);
  stats.expert_counts.push_back(plan.counts.to(DType::i64).to_vector_as<int64_t>());
  return {std::move(r), std::move(plan)};
}

Tensor MoEFFN::run_experts(const Tensor& x, const Routing& rt) {
  const ProfileScope scope("moe_ffn", x.device());
  const moe::RouterOutput& r = rt.r;
  const moe::Plan& plan = rt.plan;
  // The experts read their rows straight from x through the plan (no permuted copy),
  // biases in the GEMMs' epilogues; only the pre-activation is kept for the backward, or
  // nothing but the inputs (expert_recompute).
  Tensor ys = moe::grouped_ffn(x, w1_, b1_, w2_, b2_, plan.offsets, moe::slot_tokens(plan), UnaryOp::gelu_erf, 0,
                               cfg_.expert_recompute);
  Tensor y = moe::combine(ys, r.gates, plan);
  if (r.dropped.defined()) {
    // Tokens over capacity skip the experts and pass p_max * x (the reference's choice).
    Tensor keep = logical_not(r.dropped).unsqueeze(1);
    y = where(keep, y, x * r.gates.select(1, 0).unsqueeze(1).to(x.dtype()));
  }
  return y;
}

Tensor MoEFFN::forward(const Tensor& x, FfnStats& stats, Generator& noise) {
  return run_experts(x, route(x, stats, noise));
}

HyperMoEFFN::HyperMoEFFN(const ModelConfig& cfg, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper, Generator& gen)
    : MoEFFN(cfg, gen), layer_(moe_layer), hyper_(std::move(hyper)) {
  const HyperExpertShapes s = hyper_expert_shapes(cfg);
  expert_emb_ = param(*this, "expert_emb", s.expert_emb, gen, 1.0);
  sel1_ = register_module("sel1", std::make_shared<nn::Linear>(s.sel1, gen));
  sel2_ = register_module("sel2", std::make_shared<nn::Linear>(s.sel2, gen));
}

Tensor HyperMoEFFN::selection_embedding(const Tensor& unselected_mask) {
  // s_raw = sum of the unselected experts' embeddings (a [P, N] x [N, e] product).
  return sel2_->forward(relu(sel1_->forward(matmul(unselected_mask, expert_emb_))));
}

namespace {
// Host-side [P, N] mask of the experts NOT in each pattern.
Tensor unselected_mask(const std::vector<int64_t>& patterns, int64_t N, const Tensor& like) {
  std::vector<float> m(patterns.size() * size_t(N));
  for (size_t p = 0; p < patterns.size(); ++p)
    for (int64_t j = 0; j < N; ++j) m[p * size_t(N) + size_t(j)] = (patterns[p] >> j) & 1 ? 0.f : 1.f;
  return from_vector(m, {int64_t(patterns.size()), N}, {like.dtype(), like.device()});
}
}  // namespace

// The hypernetwork runs once per distinct pattern of this layer, here rather than for all
// layers in one pass (the spec's step 3): a layer's patterns exist only once its router
// has seen the previous layer's output. The arithmetic is the same.
Tensor HyperMoEFFN::hyper_expert(const Tensor& x, const Tensor& expert_ids) {
  const ProfileScope scope("hyper_expert", x.device());
  moe::Patterns pat = moe::selection_patterns(expert_ids, cfg_.n_experts);
  const std::vector<int64_t> patterns = pat.patterns.to_vector_as<int64_t>();
  AdapterWeights a = hyper_->generate(selection_embedding(unselected_mask(patterns, cfg_.n_experts, x)), layer_);
  return moe::hyper_adapter(x, pat.token_pattern, a.w_down, a.b_down, a.w_up, a.b_up);
}

Tensor HyperMoEFFN::hyper_expert_per_token(const Tensor& x, const Tensor& expert_ids) {
  // The reference's formulation: every token gets its own generated weights.
  const int64_t T = x.size(0), N = cfg_.n_experts;
  const auto ids = expert_ids.to(DType::i64).to_vector_as<int64_t>();
  const int64_t k = expert_ids.size(1);
  std::vector<int64_t> pats(size_t(T), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) pats[size_t(t)] |= int64_t(1) << ids[size_t(t * k + j)];
  AdapterWeights a = hyper_->generate(selection_embedding(unselected_mask(pats, N, x)), layer_);
  Tensor h = relu(matmul(x.unsqueeze(1), a.w_down).squeeze(1) + a.b_down);  // [T, r]
  return matmul(h.unsqueeze(1), a.w_up).squeeze(1) + a.b_up;
}

Tensor HyperMoEFFN::forward(const Tensor& x, FfnStats& stats, Generator& noise) {
  const Routing rt = route(x, stats, noise);
  // The selection is the router's hard choice; no gradient reaches the router from here.
  // The HyperExpert runs before the experts so that its backward runs after theirs (the
  // engine takes the latest node first): the experts' backward, where a step's memory
  // peaks, then runs before the hypernetwork's gradients exist.
  const Tensor he = hyper_expert(x, rt.r.expert_ids);
  return run_experts(x, rt) + he;
}

}  // namespace hmoe::model
