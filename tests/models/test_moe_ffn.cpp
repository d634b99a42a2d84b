// The MoE and HyperMoE FFN layers against a naive reference written here from plain
// tensor ops in f64 (every expert on every token, masked by the gates; the HyperExpert's
// adapter generated per token): forward, aux losses and every gradient (the layer's, the
// shared hypernetwork's, x's) for the Switch router with a capacity (dropped tokens pass
// p_max * x) and dropless by default, router noise and jitter only in training and
// reproducible from the Generator, the aux losses as their formulas times their config
// coefficients, and the edge shapes N = 1, k = N, T = 1.
#include <map>

#include "models/hypermoe/ffn.h"
#include "tests/support/model_util.h"
#include "tests/support/moe_ref.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace ref = hmoe::testing::moe_ref;

namespace {
using Params = std::map<std::string, Tensor>;
const TensorOptions kF64{DType::f64};

model::ModelConfig layer_cfg(int64_t N, int64_t k) { return small_layer_config(N, k); }

// A MoEFFN, or a HyperMoEFFN (layer 1 of 2) with its hypernetwork.
struct Layer {
  std::shared_ptr<model::HyperNetwork> hyper;
  std::shared_ptr<model::MoEFFN> ffn;
  // The layer lists its hypernetwork among its parameters ("hyper.*").
  std::vector<nn::Module*> modules() const { return {ffn.get()}; }
};

// Random parameters: the router and the noise weights are zero-initialised and the
// adapters start near zero, so at init the routing would be trivial and the
// HyperExpert negligible.
Layer make_layer(const model::ModelConfig& c, bool hyper, uint64_t seed = 3) {
  Generator gen(seed);
  Layer l;
  if (hyper) {
    l.hyper = std::make_shared<model::HyperNetwork>(c, 2, gen);
    l.ffn = std::make_shared<model::HyperMoEFFN>(c, 1, l.hyper, gen);
  } else {
    l.ffn = std::make_shared<model::MoEFFN>(c, gen);
  }
  NoGradGuard ng;
  for (nn::Module* m : l.modules())
    for (auto& [n, p] : m->named_parameters()) p.copy_(normal(p.shape(), gen, 0.0, n == "router.weight" ? 1.0 : 0.3));
  return l;
}

// f64 leaves holding the values of m's parameters, under m's names.
Params f64_copies(const nn::Module& m) {
  Params p;
  for (auto& [n, t] : m.named_parameters()) p[n] = t.detach().to(DType::f64).clone().set_requires_grad(true);
  return p;
}

// The random numbers the layer draws from its Generator in training, in its order:
// Switch's input jitter, then the noisy top-k's eps. Undefined when it draws none.
struct Draws {
  Tensor jitter, eps;
};
Draws draws_of(const model::ModelConfig& c, bool training, int64_t T, uint64_t seed) {
  Draws d;
  Generator g(seed);
  if (!training) return d;
  if (c.router == model::RouterKind::switch_ && c.jitter > 0)
    d.jitter = uniform({T, c.d_model}, g, 1 - c.jitter, 1 + c.jitter, {DType::f32}).to(DType::f64);
  if (c.router == model::RouterKind::topk && c.noisy)
    d.eps = normal({T, c.n_experts}, g, 0.0, 1.0, {DType::f32}).to(DType::f64);
  return d;
}

struct Reference {
  Tensor y;                     // [T, d]
  Tensor cv, lb, z;             // unweighted aux losses
  std::vector<int64_t> counts;  // tokens per expert, all k slots
  int64_t dropped = 0;
};

// The layer per spec/hypermoe.md §1-4, in f64. hp: the hypernetwork's parameters (HyperMoE).
Reference reference(const model::ModelConfig& c, const Params& p, const Params* hp, const Tensor& x, const Draws& dr) {
  const int64_t T = x.size(0), N = c.n_experts, k = c.top_k, d = c.d_model;
  Reference r;
  const Tensor clean = linear(dr.jitter.defined() ? x * dr.jitter : x, p.at("router.weight"));
  Tensor logits = clean, noise_std;
  if (dr.eps.defined()) {
    noise_std = softplus(linear(x, p.at("noise.weight"))) + 0.01;
    logits = clean + dr.eps * noise_std;
  }
  const Tensor probs = softmax(logits, 1);

  // The hard choice on the host: each token's experts best first (ties to the lower
  // index), the first k selected, then capacity by position on the top-1 choice.
  const std::vector<int64_t> order = ref::route(logits.to_vector(), T, N, N, false).ids;
  const auto pv = probs.to_vector();
  const int64_t cap = c.capacity_factor > 0 ? int64_t(std::ceil(c.capacity_factor * double(T) / double(N))) : T;
  std::vector<double> sel(size_t(T * N), 0.0), top1(size_t(T * N), 0.0), keep(size_t(T), 1.0);
  std::vector<int64_t> first(size_t(N), 0);
  r.counts.assign(size_t(N), 0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t* o = order.data() + t * N;
    for (int64_t j = 0; j < k; ++j) {
      sel[size_t(t * N + o[j])] = 1;
      ++r.counts[size_t(o[j])];
    }
    top1[size_t(t * N + o[0])] = 1;
    if (first[size_t(o[0])]++ >= cap) {
      keep[size_t(t)] = 0;
      ++r.dropped;
    }
    // f32 and f64 must make the same choice: no near tie at the k-th place.
    if (k < N) {
      const double gap = pv[size_t(t * N + o[k - 1])] - pv[size_t(t * N + o[k])];
      EXPECT_TRUE(gap == 0 || gap > 1e-5) << "near tie at token " << t;
    }
  }
  const Tensor S = from_vector(sel, {T, N}, kF64);
  const Tensor ps = probs * S;
  const bool renorm = c.renormalize.value_or(k > 1);
  const Tensor gates = renorm ? ps / sum(ps, {1}, true) : ps;  // [T, N], zero off the selection

  Tensor y = zeros({T, d}, kF64);
  for (int64_t e = 0; e < N; ++e) {
    const Tensor h = gelu(matmul(x, p.at("w1").select(0, e)) + p.at("b1").select(0, e));
    y = y + gates.narrow(1, e, 1) * (matmul(h, p.at("w2").select(0, e)) + p.at("b2").select(0, e));
  }
  // Over capacity: the experts are skipped and the token passes its top-1 gate times x.
  const Tensor kp = from_vector(keep, {T, 1}, kF64);
  y = y * kp + x * sum(gates * from_vector(top1, {T, N}, kF64), {1}, true) * (1.0 - kp);

  if (hp) {
    // s_raw = sum of the unselected experts' embeddings; the adapter made for each token.
    const Params& h = *hp;
    const int64_t rk = c.adapter_rank;
    const Tensor s_raw = matmul(1.0 - S, p.at("expert_emb"));
    const Tensor s =
        linear(relu(linear(s_raw, p.at("sel1.weight"), p.at("sel1.bias"))), p.at("sel2.weight"), p.at("sel2.bias"));
    const Tensor lemb = h.at("layer_emb").select(0, 1).unsqueeze(0).expand({T, c.layer_emb_dim});
    const Tensor hh = relu(linear(cat({s, lemb}, 1), h.at("wh.weight"), h.at("wh.bias")));
    const Tensor wd = linear(hh, h.at("head_down.weight"), h.at("head_down.bias")).reshape({T, d, rk});
    const Tensor bd = linear(hh, h.at("head_bdown.weight"), h.at("head_bdown.bias"));
    const Tensor wu = linear(hh, h.at("head_up.weight"), h.at("head_up.bias")).reshape({T, rk, d});
    const Tensor bu = linear(hh, h.at("head_bup.weight"), h.at("head_bup.bias"));
    const Tensor a = relu(matmul(x.unsqueeze(1), wd).squeeze(1) + bd);
    y = y + matmul(a.unsqueeze(1), wu).squeeze(1) + bu;
  }
  r.y = y;

  // Switch load balancing N * sum_i f_i P_i (f: fraction of routed slots, no gradient).
  std::vector<double> f(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) f[size_t(i)] = double(r.counts[size_t(i)]) / double(T * k);
  r.lb = sum(from_vector(f, {N}, kF64) * mean(probs, {0})) * double(N);
  r.z = mean(square(log(sum(exp(logits), {1}))));
  // cv^2(importance) + cv^2(load). load: the hard counts without noise, else the smooth
  // load (Shazeer et al. 2017) sum_t Phi((clean_ti - thr_ti) / std_ti), thr_ti the best
  // unselected noisy logit of token t when i is selected, else the worst selected one;
  // k = N: T each. Phi is linearised at its value so the backward sees its derivative.
  Tensor load = from_vector(std::vector<double>(r.counts.begin(), r.counts.end()), {N}, kF64);
  if (noise_std.defined() && k < N) {
    std::vector<int64_t> thr_idx(size_t(T * N));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < N; ++i)
        thr_idx[size_t(t * N + i)] = order[size_t(t * N + (sel[size_t(t * N + i)] > 0 ? k : k - 1))];
    const Tensor a = (clean - gather(logits, 1, from_vector(thr_idx, {T, N}))) / noise_std;
    const auto av = a.to_vector();
    std::vector<double> cdf(av.size()), pdf(av.size());
    for (size_t i = 0; i < av.size(); ++i) {
      cdf[i] = ref::normal_cdf(av[i]);
      pdf[i] = std::exp(-0.5 * av[i] * av[i]) / std::sqrt(2 * M_PI);
    }
    load = sum(from_vector(cdf, {T, N}, kF64) + from_vector(pdf, {T, N}, kF64) * (a - a.detach()), {0});
  }
  auto cv2 = [](const Tensor& v) {
    const Tensor m = mean(v);
    return mean(square(v - m)) / (square(m) + 1e-10);
  };
  r.cv = cv2(sum(gates, {0})) + cv2(load);
  return r;
}

Tensor weighted_aux(const model::ModelConfig& c, const Reference& r) {
  Tensor a = zeros({}, kF64);
  if (c.aux_cv_coef > 0) a = a + r.cv * c.aux_cv_coef;
  if (c.aux_lb_coef > 0) a = a + r.lb * c.aux_lb_coef;
  if (c.aux_z_coef > 0) a = a + r.z * c.aux_z_coef;
  return a;
}

double max_abs(const Tensor& t) { return max_abs_diff(t, zeros_like(t)); }

struct Outcome {
  Tensor y, aux;
  Reference ref;
};

// Runs the layer in its current mode on T random tokens, noise from Generator(noise_seed),
// and checks its output, aux loss, expert counts and the gradients of the loss
// sum(y * w) + aux (of every parameter of the layer and of its hypernetwork, and of x)
// against the reference. y_weight = 0 checks the aux losses' gradients alone.
Outcome expect_matches_reference(const model::ModelConfig& c, const Layer& l, int64_t T, uint64_t noise_seed = 7,
                                 double y_weight = 1.0) {
  for (nn::Module* m : l.modules()) m->zero_grad();
  Tensor x = randn_t({T, c.d_model}, 21, DType::f32, true);
  const Tensor w = randn_t({T, c.d_model}, 22, DType::f32) * y_weight;
  model::FfnStats stats;
  Generator noise(noise_seed);
  const Tensor y = l.ffn->forward(x, stats, noise);
  const Tensor aux = stats.aux_loss;
  (aux.defined() ? sum(y * w) + aux : sum(y * w)).backward();

  const Params p = f64_copies(*l.ffn);
  Params hp;  // the hypernetwork's: the layer's "hyper.*" under the hypernetwork's names
  for (const auto& [n, t] : p)
    if (n.starts_with("hyper.")) hp[n.substr(6)] = t;
  const Tensor xr = x.detach().to(DType::f64).clone().set_requires_grad(true);
  Reference r = reference(c, p, l.hyper ? &hp : nullptr, xr, draws_of(c, l.ffn->is_training(), T, noise_seed));
  const Tensor aux_ref = weighted_aux(c, r);
  (sum(r.y * w.to(DType::f64)) + aux_ref).backward();

  EXPECT_LE(max_abs_diff(y, r.y), 2e-5 * (1 + max_abs(r.y))) << "forward";
  EXPECT_EQ(aux.defined(), c.aux_cv_coef > 0 || c.aux_lb_coef > 0 || c.aux_z_coef > 0);
  if (aux.defined()) {
    EXPECT_NEAR(aux.item(), aux_ref.item(), 2e-5 * (1 + std::abs(aux_ref.item()))) << "aux";
  }
  EXPECT_EQ(stats.expert_counts, std::vector<std::vector<int64_t>>{r.counts});
  // A parameter off the loss's path (the noise weights in eval) has no gradient: zeros.
  auto expect_grad = [](const std::string& name, const Tensor& got, const Tensor& want) {
    const Tensor g = got.grad().defined() ? got.grad() : zeros_like(got);
    const Tensor gw = want.grad().defined() ? want.grad() : zeros_like(want);
    EXPECT_LE(max_abs_diff(g, gw), 5e-5 * (1 + max_abs(gw))) << "gradient of " << name;
  };
  for (auto& [n, t] : l.ffn->named_parameters()) expect_grad(n, t, p.at(n));
  expect_grad("x", x, xr);
  return {y, aux, std::move(r)};
}

}  // namespace

// Switch top-1 with C = ceil(cf * T / N): tokens past their expert's capacity (in token
// order) skip the experts and pass p_max * x (plus the HyperExpert, which every token sees).
TEST(MoeFfnLayer, SwitchCapacityDropsToScaledInput) {
  for (bool hyper : {false, true}) {
    SCOPED_TRACE(hyper ? "hypermoe" : "moe");
    model::ModelConfig c = layer_cfg(4, 1);
    c.router = model::RouterKind::switch_;
    c.aux_lb_coef = 0.3;
    c.aux_z_coef = 0.02;
    c.capacity_factor = 0.75;  // C = 3 of 16 tokens on 4 experts: at least 4 dropped
    const Outcome o = expect_matches_reference(c, make_layer(c, hyper), 16);
    EXPECT_GE(o.ref.dropped, 4);
    EXPECT_LT(o.ref.dropped, 16);
  }
}

// No capacity unless configured: with a zero router every token goes to expert 0 and all
// of them run it; a capacity of cf = 1 would drop all but T / N of them.
TEST(MoeFfnLayer, DroplessIsTheDefault) {
  EXPECT_EQ(model::ModelConfig{}.capacity_factor, 0.0);
  for (bool hyper : {false, true})
    for (double cf : {0.0, 1.0}) {
      SCOPED_TRACE(::testing::Message() << (hyper ? "hypermoe" : "moe") << " cf " << cf);
      model::ModelConfig c = layer_cfg(4, 1);
      c.router = model::RouterKind::switch_;
      c.capacity_factor = cf;
      Layer l = make_layer(c, hyper);
      for (auto& [n, t] : l.ffn->named_parameters())
        if (n == "router.weight") {
          NoGradGuard ng;
          t.zero_();
        }
      const Outcome o = expect_matches_reference(c, l, 12);
      EXPECT_EQ(o.ref.counts, (std::vector<int64_t>{12, 0, 0, 0}));
      EXPECT_EQ(o.ref.dropped, cf > 0 ? 9 : 0);
    }
}

// Noisy top-k and Switch's input jitter draw only in training: in eval the output is the
// noiseless reference whatever the Generator (which stays untouched); in training it is
// the reference with the Generator's draws, the same for the same seed, another for
// another seed.
TEST(MoeFfnLayer, RouterNoiseOnlyInTrainingAndReproducible) {
  for (bool hyper : {false, true})
    for (model::RouterKind router : {model::RouterKind::topk, model::RouterKind::switch_}) {
      SCOPED_TRACE(::testing::Message() << (hyper ? "hypermoe " : "moe ") << model::name(router));
      const bool sw = router == model::RouterKind::switch_;
      model::ModelConfig c = layer_cfg(5, sw ? 1 : 2);
      c.router = router;
      c.jitter = sw ? 0.05 : 0.0;
      c.aux_lb_coef = 0.1;
      Layer l = make_layer(c, hyper);
      const int64_t T = 13;
      const Tensor x = randn_t({T, c.d_model}, 21, DType::f32);
      auto run = [&](uint64_t seed) {
        model::FfnStats st;
        Generator g(seed);
        NoGradGuard ng;
        const Tensor y = l.ffn->forward(x, st, g);
        EXPECT_EQ(g.offset() == 0, !l.ffn->is_training()) << "draws only in training";
        return y;
      };
      l.ffn->eval();
      const Tensor y_eval = expect_matches_reference(c, l, T, 7).y;
      EXPECT_TRUE(bit_equal(run(7), run(8)));
      l.ffn->train();
      const Tensor y_train = expect_matches_reference(c, l, T, 7).y;
      EXPECT_TRUE(bit_equal(run(7), run(7)));
      EXPECT_GT(max_abs_diff(run(7), run(8)), 1e-4);
      EXPECT_GT(max_abs_diff(y_train, y_eval), 1e-4);
    }
}

// Each aux loss is its formula (checked in the reference, value and gradient, with the
// task loss's gradient left out) times its coefficient: twice the coefficient, twice
// the loss; zero, no loss; all three, the sum. In training (noisy top-k: smooth load) and in eval.
TEST(MoeFfnLayer, AuxLossesFollowTheirCoefficients) {
  using Coef = double model::ModelConfig::*;
  const std::pair<const char*, Coef> coefs[] = {{"cv", &model::ModelConfig::aux_cv_coef},
                                                {"lb", &model::ModelConfig::aux_lb_coef},
                                                {"z", &model::ModelConfig::aux_z_coef}};
  for (bool training : {true, false}) {
    model::ModelConfig none = layer_cfg(5, 2);
    for (const auto& [name, coef] : coefs) none.*coef = 0.0;
    auto aux_of = [&](const model::ModelConfig& c) {
      Layer l = make_layer(c, false);
      l.ffn->train(training);
      return expect_matches_reference(c, l, 11, 7, 0.0).aux;
    };
    SCOPED_TRACE(training ? "training" : "eval");
    EXPECT_FALSE(aux_of(none).defined());
    double total = 0;
    model::ModelConfig all = none;
    for (const auto& [name, coef] : coefs) {
      SCOPED_TRACE(name);
      model::ModelConfig c = none;
      c.*coef = 0.7;
      all.*coef = 0.7;
      const double one = aux_of(c).item();
      EXPECT_GT(one, 1e-4);
      c.*coef = 1.4;
      EXPECT_NEAR(aux_of(c).item(), 2 * one, 1e-6 * one);
      total += one;
    }
    EXPECT_NEAR(aux_of(all).item(), total, 1e-6 * total);
  }
}

// N = 1, k = N and T = 1 run forward and backward and match the reference, for both
// layers and both routers, in training (noise, smooth load) and in eval.
TEST(MoeFfnLayer, EdgeShapes) {
  struct Case {
    int64_t N, k, T;
    model::RouterKind router;
    double cf;
  };
  using model::RouterKind;
  const Case cases[] = {{1, 1, 9, RouterKind::topk, 0},     {4, 4, 9, RouterKind::topk, 0},
                        {4, 2, 1, RouterKind::topk, 0},     {1, 1, 1, RouterKind::topk, 0},
                        {4, 4, 1, RouterKind::topk, 0},     {1, 1, 9, RouterKind::switch_, 1.0},
                        {4, 1, 1, RouterKind::switch_, 1.0}};
  for (bool hyper : {false, true})
    for (const Case& cs : cases)
      for (bool training : {true, false}) {
        SCOPED_TRACE(::testing::Message()
                     << (hyper ? "hypermoe" : "moe") << " N " << cs.N << " k " << cs.k << " T " << cs.T << " "
                     << model::name(cs.router) << (training ? " training" : " eval"));
        model::ModelConfig c = layer_cfg(cs.N, cs.k);
        c.router = cs.router;
        c.capacity_factor = cs.cf;
        c.aux_lb_coef = 0.2;
        c.aux_z_coef = 0.05;
        Layer l = make_layer(c, hyper);
        l.ffn->train(training);
        const Outcome o = expect_matches_reference(c, l, cs.T);
        EXPECT_EQ(o.y.shape(), (Shape{cs.T, c.d_model}));
        EXPECT_EQ(o.ref.dropped, 0);
      }
}
