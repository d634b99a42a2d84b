// The expert-parallel MoE and HyperMoE layers under mpirun against the same layer in one
// process on the whole batch (each rank computes that reference itself): forward output,
// the aux losses, dx and every parameter gradient, in f64 within 1e-12, for N = 8 experts,
// k = 1 and 2, the noisy top-k router in training (its noise drawn by global token row),
// the Switch router with a capacity over the whole batch (the tokens over it stay home),
// over every expert-parallel size dividing the world (world 2: ep 1 (pure data
// parallelism) and 2; world 4: ep 2 (2 x 2) and 4), and forced routings: every token to
// expert 0, so that the other ranks' experts receive nothing (and, with a capacity, most
// tokens are dropped).
#include <map>

#include "models/hypermoe/ep_pair.h"
#include "ops/dist.h"
#include "tests/support/dist_world.h"
#include "tests/support/model_util.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace td = hmoe::testing::dist;

namespace {

model::ModelConfig layer_cfg(int64_t k) {
  model::ModelConfig c = small_layer_config(8, k);
  c.aux_cv_coef = 0.1;
  c.aux_lb_coef = 0.05;
  c.aux_z_coef = 0.01;
  return c;
}

// Rows [first, first + rows) of t along dim 0.
Tensor rows_of(const Tensor& t, int64_t first, int64_t rows) { return t.narrow(0, first, rows); }

void expect_near_rel(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(shape_str(got.shape()), shape_str(want.shape())) << what;
  const double scale = std::max(1.0, max_abs_diff(want, zeros(want.shape(), {want.dtype()})));
  EXPECT_LE(max_abs_diff(got, want), 1e-12 * scale) << what;
}

struct Case {
  int64_t k;
  bool hyper;
  int64_t ep;
  bool forced;            // every token to expert 0
  bool switch_capacity;   // the Switch router (k 1) with capacity factor 1
};

std::string name(const Case& c) {
  return std::string(c.hyper ? "hypermoe" : "moe") + " k " + std::to_string(c.k) + " ep " + std::to_string(c.ep) +
         (c.forced ? " forced" : "") + (c.switch_capacity ? " switch capacity 1" : "");
}

void check(const Case& cs) {
  SCOPED_TRACE(name(cs));
  const int W = td::world().size(), r = td::world().rank();
  model::ModelConfig cfg = layer_cfg(cs.k);
  if (cs.switch_capacity) {
    cfg.router = model::RouterKind::switch_;
    cfg.capacity_factor = 1.0;
    cfg.jitter = 0.1;
    cfg.aux_cv_coef = 0;
  }
  const nn::Parallel par = nn::Parallel::make(td::world_ptr(), cs.ep);
  const auto ref = model::make_ffn_layer(cfg, cs.hyper, {}, 3);
  const auto ep = model::make_ffn_layer(cfg, cs.hyper, par, 3);

  // The sharded layer is built with the values of the whole one (its rows of the experts).
  const std::map<std::string, nn::RowShard> shards = ep->parameter_shards();
  const auto ref_params = ref->named_parameters();
  const auto ep_params = ep->named_parameters();
  ASSERT_EQ(ref_params.size(), ep_params.size());
  for (size_t i = 0; i < ref_params.size(); ++i) {
    const auto& [n, whole] = ref_params[i];
    const Tensor& mine = ep_params[i].second;
    const auto sh = shards.find(n);
    EXPECT_EQ(sh != shards.end(), cs.ep > 1 && (n == "w1" || n == "b1" || n == "w2" || n == "b2")) << n;
    const Tensor want = sh == shards.end() ? whole : rows_of(whole, sh->second.first, mine.size(0));
    EXPECT_TRUE(bit_equal(mine, want)) << n << " at construction";
  }
  // Random values everywhere, the same on every rank and in both layers; then f64.
  model::set_random_parameters(*ref, *ep, cs.forced, 11);
  ref->to(DType::f64);
  ep->to(DType::f64);

  const int64_t T = 6, d = cfg.d_model;  // tokens per rank
  Tensor x_all = rand_t({W * T, d}, 21);
  if (cs.forced) x_all.narrow(1, 0, 1).copy_(rand_t({W * T, 1}, 22, 0.5, 1.5));
  const Tensor up = rand_t({W * T, d}, 23);
  Tensor x_ref = x_all.clone().set_requires_grad(true);
  Tensor x_mine = rows_of(x_all, r * T, T).clone().set_requires_grad(true);

  // The reference: one process, the whole batch; mean over its rows + the aux losses.
  Generator noise_ref(5), noise_ep(5);
  model::FfnStats st_ref, st_ep;
  const Tensor y_ref = ref->forward(x_ref, st_ref, noise_ref);
  (sum(y_ref * up) / double(W * T) + st_ref.aux_loss).backward();
  // This rank: the mean over its rows + the aux losses (of the whole batch). Averaged over
  // the ranks these are the reference's loss; so are the gradients, averaged.
  const Tensor y = ep->forward(x_mine, st_ep, noise_ep);
  (sum(y * rows_of(up, r * T, T)) / double(T) + st_ep.aux_loss).backward();

  EXPECT_EQ(noise_ep.offset(), noise_ref.offset()) << "both draw the whole batch's noise";
  expect_near_rel(y.detach(), rows_of(y_ref.detach(), r * T, T), "y");
  expect_near_rel(st_ep.aux_loss.detach(), st_ref.aux_loss.detach(), "aux loss");
  expect_near_rel(x_mine.grad() / double(W), rows_of(x_ref.grad(), r * T, T), "dx");
  for (size_t i = 0; i < ref_params.size(); ++i) {
    const auto& [n, whole] = ref_params[i];
    const auto sh = shards.find(n);
    Tensor g = ep_params[i].second.grad().clone();
    ASSERT_TRUE(g.defined()) << n << " has no gradient (an idle expert's must be zero, not missing)";
    (sh == shards.end() ? par.world : (par.edp ? par.edp : par.world))->all_reduce(g);
    const Tensor want = sh == shards.end() ? whole.grad() : rows_of(whole.grad(), sh->second.first, g.size(0));
    expect_near_rel(g / double(W), want, n + " gradient");
  }
}

TEST(ExpertParallelLayer, EqualsOneProcessOnTheWholeBatch) {
  const int W = td::world().size();
  for (int64_t ep = 1; ep <= W; ep *= 2) {
    if (W % ep) continue;
    for (bool hyper : {false, true})
      for (int64_t k : {1, 2})
        for (bool forced : {false, true}) check({k, hyper, ep, forced, false});
    for (bool forced : {false, true}) check({1, false, ep, forced, true});
  }
}

TEST(ExpertParallelLayer, RefusesAnEpThatDoesNotDivideTheExperts) {
  if (td::world().size() % 2) GTEST_SKIP() << "needs an even world";
  model::ModelConfig c = layer_cfg(1);
  c.n_experts = 5;
  Generator gen(1);
  const nn::Parallel two = nn::Parallel::make(td::world_ptr(), 2);
  EXPECT_HMOE_ERROR(std::make_shared<model::MoEFFN>(c, gen, two), "must divide n_experts");
  EXPECT_HMOE_ERROR(nn::Parallel::make(td::world_ptr(), td::world().size() + 1), "must divide the world size");
}

}  // namespace
