// The language model spread over ranks (data parallel, experts sharded) against one
// process on the whole batch, in f64: each rank's loss averaged over the ranks is the
// whole batch's, the averaged gradients (nn::average_gradients) and the clipping norm
// (nn::clip_grad_norm) are one process's, and the state gathered from the shards
// (nn::gather_shards) is the whole model's, which nn::slice_shards cuts back.
#include "models/hypermoe/lm.h"
#include "models/nn/parallel.h"
#include "models/optim/optimizer.h"
#include "tests/support/dist_world.h"
#include "tests/support/model_util.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace td = hmoe::testing::dist;

namespace {

model::ModelConfig lm_cfg(model::FfnKind ffn, int64_t k) {
  model::ModelConfig c = small_lm_config(8, k);
  c.ffn = ffn;
  c.aux_lb_coef = 0.01;
  c.aux_z_coef = 0.001;
  c.dropout = 0.1;
  return c;
}

void expect_rel(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_EQ(shape_str(got.shape()), shape_str(want.shape())) << what;
  const double scale = std::max(1.0, max_abs_diff(want, zeros(want.shape(), {want.dtype()})));
  EXPECT_LE(max_abs_diff(got, want), tol * scale) << what;
}

void check(model::FfnKind ffn, int64_t k, int64_t ep) {
  SCOPED_TRACE(std::string(model::name(ffn)) + " k " + std::to_string(k) + " ep " + std::to_string(ep));
  const int W = td::world().size(), r = td::world().rank();
  const model::ModelConfig cfg = lm_cfg(ffn, k);
  const nn::Parallel par = nn::Parallel::make(td::world_ptr(), ep);
  model::LanguageModel ref(cfg, 7), mine(cfg, 7, par);
  ref.to(DType::f64);
  mine.to(DType::f64);
  ref.train();
  mine.train();
  // The whole model's state, gathered from the ranks, is the one process's (construction).
  const auto gathered = nn::gather_shards(mine.state_dict().items(), mine.parameter_shards(), par);
  const auto whole = ref.state_dict().items();
  ASSERT_EQ(gathered.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(gathered[i].first, whole[i].first);
    EXPECT_TRUE(bit_equal(gathered[i].second, whole[i].second)) << whole[i].first;
  }

  const int64_t B = 2, T = cfg.block_size;  // sequences per rank
  const Tensor ids = rand_ids({W * B + 0, T + 1}, 0, cfg.vocab_size, 31);
  auto loss_of = [&](model::LanguageModel& m, const Tensor& seq, Generator& noise) {
    const model::LmOutput o = m.forward(seq.narrow(1, 0, T), noise);
    const Tensor lm = cross_entropy(o.logits.reshape({-1, cfg.vocab_size}), seq.narrow(1, 1, T).reshape({-1}));
    return lm + o.aux_loss.to(lm.dtype());
  };
  Generator n_ref(9), n_mine(9);
  const Tensor l_ref = loss_of(ref, ids, n_ref);
  l_ref.backward();
  const Tensor l_mine = loss_of(mine, ids.narrow(0, r * B, B), n_mine);
  l_mine.backward();
  Tensor mean_loss = l_mine.detach().clone();
  td::world().all_reduce(mean_loss);
  expect_rel(mean_loss / double(W), l_ref.detach(), 1e-12, "loss averaged over the ranks");

  nn::average_gradients(mine, par, /*bucket_bytes=*/4096);  // small buckets: several per dtype
  const auto shards = mine.parameter_shards();
  const auto rp = ref.named_parameters(), mp = mine.named_parameters();
  ASSERT_EQ(rp.size(), mp.size());
  for (size_t i = 0; i < rp.size(); ++i) {
    const auto sh = shards.find(rp[i].first);
    const Tensor want = sh == shards.end() ? rp[i].second.grad()
                                           : rp[i].second.grad().narrow(0, sh->second.first, sh->second.rows);
    expect_rel(mp[i].second.grad(), want, 1e-12, rp[i].first + " gradient");
  }
  const double norm_ref = optim::clip_grad_norm_(ref.parameters(), 1e-3);
  const double norm = nn::clip_grad_norm(mine, par, 1e-3);
  EXPECT_NEAR(norm, norm_ref, 1e-12 * norm_ref);
  for (size_t i = 0; i < rp.size(); ++i) {
    const auto sh = shards.find(rp[i].first);
    const Tensor want = sh == shards.end() ? rp[i].second.grad()
                                           : rp[i].second.grad().narrow(0, sh->second.first, sh->second.rows);
    expect_rel(mp[i].second.grad(), want, 1e-12, rp[i].first + " gradient after clipping");
  }
  // The whole state cut back into this rank's part loads into the sharded model.
  std::map<std::string, Tensor> full(whole.begin(), whole.end());
  EXPECT_NO_THROW(mine.load_state_dict(nn::slice_shards(full, shards)));
}

TEST(ExpertParallelModel, EqualsOneProcessOnTheWholeBatch) {
  const int W = td::world().size();
  for (int64_t ep = 1; ep <= W; ep *= 2) {
    if (W % ep) continue;
    check(model::FfnKind::hypermoe, 2, ep);
    check(model::FfnKind::moe, 1, ep);
  }
  check(model::FfnKind::dense, 1, 1);
}

}  // namespace
