// Dense, MoE and HyperMoE feed-forward layers and the shared hypernetwork.
#include "models/hypermoe/ffn.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "engine/profiler.h"
#include "models/hypermoe/shapes.h"
#include "ops/dist.h"
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
// Rows `shard` of a parameter of shape `whole` drawn N(0, std) (zeros for std 0): the
// values one process holding the whole tensor draws for those rows.
Tensor sharded_param(nn::Module& m, const std::string& name, Shape whole, const nn::RowShard& shard, Generator& gen,
                     double std) {
  const int64_t row_numel = shape_numel(whole) / whole[0];
  Shape local = whole;
  local[0] = shard.rows;
  Tensor t = zeros(local);
  if (std > 0) {
    Generator g = gen.take_rows(uint64_t(shard.first), uint64_t(row_numel), uint64_t(whole[0]));
    NoGradGuard ng;
    t.copy_(normal(local, g, 0.0, std));
  }
  return m.register_parameter(name, t, shard);
}
// Tokens over capacity skip the experts and pass p_max * x (the reference's choice).
Tensor pass_dropped(const Tensor& y, const Tensor& x, const moe::RouterOutput& r) {
  if (!r.dropped.defined()) return y;
  return where(logical_not(r.dropped).unsqueeze(1), y, x * r.gates.select(1, 0).unsqueeze(1).to(x.dtype()));
}
// U(-a, a) for the hypernetwork heads ("hyperfanin").
void init_uniform(const Tensor& t, Generator& gen, double a) {
  NoGradGuard ng;
  Tensor d = t;
  d.copy_(uniform(t.shape(), gen, -a, a));
}
}  // namespace

Tensor FeedForward::forward(const Tensor& x, FfnStats& stats) {
  HMOE_CHECK(!draws_noise(), "FeedForward::forward: this layer draws router noise or jitter in training: pass a ",
             "Generator, or call eval()");
  Generator unused(0);  // nothing is drawn from it (checked above)
  return forward(x, stats, unused);
}

Tensor FeedForward::forward(const Tensor& x) {
  FfnStats stats;
  return forward(x, stats);
}

DenseFFN::DenseFFN(const FfnOptions& o, Generator& gen) {
  const DenseFfnShapes s = dense_ffn_shapes(layer_config(o));
  fc_ = register_module("fc", std::make_shared<nn::Linear>(s.fc, gen));
  proj_ = register_module("proj", std::make_shared<nn::Linear>(s.proj, gen));
  init_normal(fc_->weight, gen, o.init_std);
  init_normal(proj_->weight, gen, o.out_init_std);
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

MoEFFN::MoEFFN(const FfnOptions& o, Generator& gen, const nn::Parallel& par) : cfg_(layer_config(o)), par_(par) {
  const ModelConfig& cfg = cfg_;
  HMOE_CHECK(cfg.n_experts % par.ep_size() == 0, "MoE layer: ", cfg.n_experts, " experts cannot be shared by ",
             par.ep_size(), " expert-parallel ranks (dist.ep must divide n_experts)");
  const MoEShapes s = moe_shapes(cfg);
  router_ = register_module("router", std::make_shared<nn::Linear>(s.router, gen));
  if (o.router_init_std > 0) {
    init_normal(router_->weight, gen, o.router_init_std);
  } else {
    NoGradGuard ng;
    router_->weight.zero_();  // zero-initialised as in the reference
  }
  if (s.noise) {
    noise_ = register_module("noise", std::make_shared<nn::Linear>(*s.noise, gen));
    NoGradGuard ng;
    noise_->weight.zero_();
  }
  if (!par.experts_sharded()) {
    w1_ = param(*this, "w1", s.w1, gen, o.init_std);
    b1_ = param(*this, "b1", s.b1, gen, 0.0);
    w2_ = param(*this, "w2", s.w2, gen, o.out_init_std);
    b2_ = param(*this, "b2", s.b2, gen, 0.0);
    return;
  }
  const nn::RowShard mine = par.experts(cfg.n_experts);
  w1_ = sharded_param(*this, "w1", s.w1, mine, gen, o.init_std);
  b1_ = sharded_param(*this, "b1", s.b1, mine, gen, 0.0);
  w2_ = sharded_param(*this, "w2", s.w2, mine, gen, o.out_init_std);
  b2_ = sharded_param(*this, "b2", s.b2, mine, gen, 0.0);
}

Tensor MoEFFN::batch_capacity_drops(const Tensor& expert_ids) const {
  const int64_t N = cfg_.n_experts, T = expert_ids.size(0), k = expert_ids.size(1);
  const int W = par_.world_size(), me = par_.world_rank();
  const std::vector<int64_t> ids = expert_ids.to(Device::cpu()).to(DType::i64).to_vector_as<int64_t>();
  std::vector<int64_t> first(size_t(N), 0);
  for (int64_t t = 0; t < T; ++t) ++first[size_t(ids[size_t(t * k)])];
  // Every rank's first choices per expert; the tokens of lower ranks come first.
  const std::vector<int64_t> all = par_.world->all_gather(from_vector(first, {N})).to_vector_as<int64_t>();
  std::vector<int64_t> before(size_t(N), 0);
  for (int q = 0; q < me; ++q)
    for (int64_t e = 0; e < N; ++e) before[size_t(e)] += all[size_t(q * N + e)];
  return moe::capacity_drops(expert_ids, N, moe::capacity_of(cfg_.capacity_factor, T * W, N), from_vector(before, {N}));
}

moe::RankSum MoEFFN::over_ranks() const {
  if (par_.world_size() == 1) return {};
  return [world = par_.world](const Tensor& t) { return dist::sum_over_ranks(world, t); };
}

MoEFFN::Routing MoEFFN::route(const Tensor& x, FfnStats& stats, Generator& noise) {
  const ProfileScope scope("moe_router", x.device());
  const int64_t N = cfg_.n_experts, T = x.size(0);
  // Random draws by the token's row in the whole batch (rank r holds rows [r T, (r + 1) T)).
  auto my_rows = [&](int64_t row_numel) {
    return noise.take_rows(uint64_t(par_.world_rank() * T), uint64_t(row_numel), uint64_t(par_.world_size() * T));
  };
  Tensor xin = x;
  if (cfg_.router == RouterKind::switch_ && is_training() && cfg_.jitter > 0) {
    Generator g = my_rows(x.size(1));
    xin = x * uniform(x.shape(), g, 1.0 - cfg_.jitter, 1.0 + cfg_.jitter, {x.dtype(), x.device()});
  }
  // Router math in f32 (f64 for an f64 layer), whatever the layer's precision below that.
  const DType rdt = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor logits = router_->forward(xin).to(rdt);
  const Tensor clean = logits;  // the smooth load of the cv loss compares them with the noisy ones
  Tensor noise_std;
  if (noise_ && is_training()) {
    noise_std = softplus(noise_->forward(x).to(rdt)) + 0.01;
    Generator g = my_rows(N);
    logits = logits + normal(logits.shape(), g, 0.0, 1.0, {rdt, logits.device()}) * noise_std;
  }
  moe::RouterConfig rc;
  rc.k = cfg_.top_k;
  rc.renormalize = cfg_.renormalize;
  // Over several ranks the capacity is the whole batch's, its positions in the batch's order.
  const bool batch_capacity = cfg_.capacity_factor > 0 && par_.world_size() > 1;
  rc.capacity_factor = batch_capacity ? 0.0 : cfg_.capacity_factor;
  moe::RouterOutput r = moe::route(logits, rc);
  if (batch_capacity) r.dropped = batch_capacity_drops(r.expert_ids);
  const moe::RankSum over = over_ranks();
  if (cfg_.aux_cv_coef > 0) stats.add_aux(moe::cv_squared_loss(r, noise_std, clean, over) * cfg_.aux_cv_coef);
  if (cfg_.aux_lb_coef > 0) stats.add_aux(moe::load_balancing_loss(r, over) * cfg_.aux_lb_coef);
  if (cfg_.aux_z_coef > 0) stats.add_aux(moe::router_z_loss(logits, over) * cfg_.aux_z_coef);

  moe::Plan plan = moe::make_plan(r.expert_ids, N);
  stats.expert_counts.push_back(plan.counts.to(DType::i64).to_vector_as<int64_t>());
  return {std::move(r), std::move(plan)};
}

Tensor MoEFFN::run_experts(const Tensor& x, const Routing& rt, const std::function<void()>& meanwhile) {
  if (par_.experts_sharded()) return run_experts_sharded(x, rt, meanwhile);
  if (meanwhile) meanwhile();
  const ProfileScope scope("moe_ffn", x.device());
  const moe::RouterOutput& r = rt.r;
  const moe::Plan& plan = rt.plan;
  // The experts read their rows straight from x through the plan (no permuted copy),
  // biases in the GEMMs' epilogues; only the pre-activation is kept for the backward, or
  // nothing but the inputs (expert_recompute).
  Tensor ys = moe::grouped_ffn(x, w1_, b1_, w2_, b2_, plan.offsets, moe::slot_tokens(plan), UnaryOp::gelu_erf, 0,
                               cfg_.expert_recompute);
  return pass_dropped(moe::combine(ys, r.gates, plan), x, r);
}

// Experts in contiguous blocks over the P ranks of par_.ep, E per rank. The plan orders
// the routed rows by global expert, so by destination rank and, within it, by that rank's
// local expert: the send buffer is peer-major with E chunks per peer. The receiver gets
// them chunk-major (local expert first, source rank second, each source's rows in its
// token order), which is the grouped FFN's input order: no second permute. Tokens over
// capacity stay home (a group N after the experts' that is not sent). `meanwhile` runs
// while the rows travel where that overlaps (its ops' backward while their gradients
// travel back: see dist::RowExchange), else first.
Tensor MoEFFN::run_experts_sharded(const Tensor& x, const Routing& rt, const std::function<void()>& meanwhile) {
  const ProfileScope scope("moe_ffn", x.device());
  const moe::RouterOutput& r = rt.r;
  const int64_t N = cfg_.n_experts, P = par_.ep_size(), E = par_.local_experts(N), d = x.size(1);
  moe::Plan dropped_plan;
  if (r.dropped.defined()) {
    const int64_t T = r.expert_ids.size(0), k = r.expert_ids.size(1);
    std::vector<int64_t> ids = r.expert_ids.to(Device::cpu()).to(DType::i64).to_vector_as<int64_t>();
    const std::vector<int64_t> drop = r.dropped.to(Device::cpu()).to(DType::i64).to_vector_as<int64_t>();
    for (int64_t t = 0; t < T; ++t)
      if (drop[size_t(t)])
        for (int64_t j = 0; j < k; ++j) ids[size_t(t * k + j)] = N;
    dropped_plan = moe::make_plan(from_vector(ids, {T, k}, {DType::i64, x.device()}), N + 1);
  }
  const moe::Plan& plan = r.dropped.defined() ? dropped_plan : rt.plan;
  // Counts first: what each peer sends to each of this rank's experts.
  std::vector<int64_t> send_rows = plan.counts.to(Device::cpu()).to(DType::i64).to_vector_as<int64_t>();
  const int64_t stay = r.dropped.defined() ? send_rows[size_t(N)] : 0;
  send_rows.resize(size_t(N));
  const std::vector<int64_t> per_peer(size_t(P), E);
  const std::vector<int64_t> recv_rows =
      par_.ep->all_to_all_v(from_vector(send_rows, {N}), per_peer, per_peer).to_vector_as<int64_t>();
  std::vector<int64_t> offsets(size_t(E) + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    offsets[size_t(e) + 1] = offsets[size_t(e)];
    for (int64_t p = 0; p < P; ++p) offsets[size_t(e) + 1] += recv_rows[size_t(p * E + e)];
  }
  Tensor xs = moe::permute_rows(x, plan);
  if (stay) xs = xs.narrow(0, 0, xs.size(0) - stay);
  // Overlap where the exchange runs in the background (nccl, on its communication
  // stream). OpenMPI moves large messages only inside its calls, so on CPUs nothing
  // would overlap, and a training step measured slower with the adapter in between.
  const bool overlap = par_.ep->backend() == dist::Backend::nccl && x.device().is_cuda();
  if (meanwhile && !overlap) meanwhile();
  dist::RowExchange dispatch(par_.ep, xs, send_rows, recv_rows, {int(E), false, true});
  if (meanwhile && overlap) meanwhile();
  const Tensor xin = dispatch.wait();
  // Every rank runs its experts, with no rows too, so that the backward's exchanges meet.
  const Tensor ys_local = moe::grouped_ffn(xin, w1_, b1_, w2_, b2_,
                                           from_vector(offsets, {E + 1}), Tensor(),
                                           UnaryOp::gelu_erf, 0, cfg_.expert_recompute);
  Tensor ys = dist::exchange_rows(par_.ep, ys_local, recv_rows, send_rows, {int(E), true, false});
  if (stay) ys = cat({ys, zeros({stay, d}, {ys.dtype(), ys.device()})}, 0);  // replaced below
  return pass_dropped(moe::combine(ys, r.gates, plan), x, r);
}

Tensor MoEFFN::forward(const Tensor& x, FfnStats& stats, Generator& noise) {
  return run_experts(x, route(x, stats, noise));
}

bool MoEFFN::draws_noise() const {
  const bool jitter = cfg_.router == RouterKind::switch_ && cfg_.jitter > 0;
  return is_training() && (noise_ != nullptr || jitter);
}

HyperMoEFFN::HyperMoEFFN(const FfnOptions& o, Generator& gen, int64_t moe_layer, std::shared_ptr<HyperNetwork> hyper,
                         const nn::Parallel& par)
    : MoEFFN(o, gen, par), layer_(moe_layer), hyper_(std::move(hyper)) {
  HMOE_CHECK(moe_layer >= 0, "HyperMoEFFN: moe_layer must be >= 0, got ", moe_layer);
  const HyperExpertShapes s = hyper_expert_shapes(cfg_);
  expert_emb_ = param(*this, "expert_emb", s.expert_emb, gen, 1.0);
  sel1_ = register_module("sel1", std::make_shared<nn::Linear>(s.sel1, gen));
  sel2_ = register_module("sel2", std::make_shared<nn::Linear>(s.sel2, gen));
  if (!hyper_) hyper_ = std::make_shared<HyperNetwork>(o, moe_layer + 1, gen);
  HMOE_CHECK(moe_layer < hyper_->layers(), "HyperMoEFFN: MoE layer ", moe_layer, " of a hypernetwork built for ",
             hyper_->layers(), " layers");
  register_module("hyper", hyper_);
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
  auto generate = [&](const std::vector<int64_t>& p) {
    return hyper_->generate(selection_embedding(unselected_mask(p, cfg_.n_experts, x)), layer_);
  };
  HMOE_CHECK(!adapter_cache_ || !autograd::grad_enabled(),
             "HyperMoEFFN: this layer caches its adapters for inference (cache_adapters); it cannot be trained");
  const AdapterWeights a = adapter_cache_ ? adapter_cache_->get(patterns, generate) : generate(patterns);
  return moe::hyper_adapter(x, pat.token_pattern, a.w_down, a.b_down, a.w_up, a.b_up);
}

void HyperMoEFFN::cache_adapters() {
  if (!adapter_cache_) adapter_cache_ = std::make_unique<AdapterCache>();
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
  // peaks, then runs before the hypernetwork's gradients exist. With the experts on
  // other ranks it runs while the tokens travel to them, and its backward while their
  // gradients travel back: it needs no communication.
  Tensor he;
  const Tensor y = run_experts(x, rt, [&] { he = hyper_expert(x, rt.r.expert_ids); });
  return y + he;
}

}  // namespace hmoe::model
