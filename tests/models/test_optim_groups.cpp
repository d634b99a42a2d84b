// Optimiser parameter groups (a learning-rate scale and weight decay per group, state
// keyed "<group>.<parameter>.<what>") and the optimiser's state dict saved to and loaded
// from a safetensors file.
#include <filesystem>

#include "models/optim/optimizer.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

Tensor leaf(uint64_t seed, int64_t n) { return rand_t({n}, seed, -1, 1, DType::f32).set_requires_grad(true); }

void give_grads(const std::vector<Tensor>& ps, uint64_t seed) {
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor p = ps[i];
    p.set_grad(rand_t(p.shape(), seed + i, -1, 1, DType::f32));
  }
}

// Two groups in one AdamW update as two AdamWs with the groups' lr and decay, bit for bit.
TEST(OptimGroups, OneOptimiserWithGroupsEqualsOnePerGroup) {
  const Tensor a0 = leaf(1, 5), b0 = leaf(2, 3);
  Tensor a = a0.detach().clone().set_requires_grad(true), b = b0.detach().clone().set_requires_grad(true);
  Tensor ra = a0.detach().clone().set_requires_grad(true), rb = b0.detach().clone().set_requires_grad(true);
  optim::AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.2;
  std::vector<optim::ParamGroup> groups(2);
  groups[0] = {"main", {a}, {"a"}, 1.0, std::nullopt};
  groups[1] = {"hyper", {b}, {"b"}, 0.25, 0.0};
  optim::AdamW opt(groups, o);
  optim::AdamWOptions ob = o;
  ob.lr = 0.1 * 0.25;
  ob.weight_decay = 0.0;
  optim::AdamW ref_a({ra}, o), ref_b({rb}, ob);
  for (int t = 0; t < 3; ++t) {
    const double lr = 0.1 / (t + 1);
    opt.set_lr(lr);
    ref_a.set_lr(lr);
    ref_b.set_lr(lr * 0.25);
    give_grads({a, b}, 10 * t);
    give_grads({ra, rb}, 10 * t);
    opt.step();
    ref_a.step();
    ref_b.step();
    EXPECT_TRUE(bit_equal(a, ra)) << t;
    EXPECT_TRUE(bit_equal(b, rb)) << t;
  }
  std::vector<std::string> keys;
  for (const auto& [k, v] : opt.state_tensors()) keys.push_back(k);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"main.a.exp_avg", "main.a.exp_avg_sq", "hyper.b.exp_avg", "hyper.b.exp_avg_sq"}));
  EXPECT_EQ(opt.parameter_of("hyper.b.exp_avg"), "b");
  EXPECT_EQ(opt.parameter_of("main.b.exp_avg"), "");
  EXPECT_EQ(opt.parameter_of("nothing"), "");
  EXPECT_EQ(opt.param_groups().size(), 2u);
  EXPECT_EQ(opt.step_count(), 3);
}

TEST(OptimGroups, BadGroupsAreErrors) {
  optim::AdamWOptions o;
  EXPECT_HMOE_ERROR(optim::AdamW(std::vector<optim::ParamGroup>{{"g", {leaf(1, 2)}, {}, 1.0, std::nullopt},
                                                                {"g", {leaf(2, 2)}, {}, 1.0, std::nullopt}},
                                 o),
                    "two parameter groups named 'g'");
  EXPECT_HMOE_ERROR(optim::AdamW(std::vector<optim::ParamGroup>{{"g", {leaf(1, 2)}, {"x", "y"}, 1.0, std::nullopt}}, o),
                    "1 parameters and 2 names");
  EXPECT_HMOE_ERROR(optim::SGD(std::vector<optim::ParamGroup>{{"a.b", {leaf(1, 2)}, {}, 1.0, std::nullopt}}, {}),
                    "has a '.'");
  // One tensor twice, within a group or across two, would be stepped twice per step.
  const Tensor w = leaf(1, 2);
  EXPECT_HMOE_ERROR(optim::AdamW(std::vector<Tensor>{w, leaf(2, 2), w}, o), "parameter 2 of group '' is given twice");
  EXPECT_HMOE_ERROR(optim::AdamW(std::vector<optim::ParamGroup>{{"a", {w}, {"w"}, 1.0, std::nullopt},
                                                                {"b", {w}, {"w2"}, 1.0, std::nullopt}},
                                 o),
                    "parameter 'w2' of group 'b' is given twice");
}

// Saved after two steps and loaded into a fresh optimiser over copies of the parameters,
// the next steps are the same to the bit (bf16 parameters: master weights included).
TEST(OptimGroups, StateDictSavedToAFileResumesExactly) {
  const std::filesystem::path path = std::filesystem::temp_directory_path() / "hmoe_test_optim_state.safetensors";
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor p = leaf(3, 6).detach().to(dt).set_requires_grad(true);
    Tensor q = leaf(4, 2).detach().to(dt).set_requires_grad(true);
    auto groups = [](Tensor x, Tensor y) {
      return std::vector<optim::ParamGroup>{{"decay", {x}, {"w"}, 1.0, std::nullopt}, {"plain", {y}, {"b"}, 1.0, 0.0}};
    };
    optim::AdamW opt(groups(p, q), {});
    for (int t = 0; t < 2; ++t) {
      give_grads({p, q}, 20 + t);
      opt.step();
    }
    opt.save(path.string());
    Tensor p2 = zeros(p.shape(), {dt}).set_requires_grad(true), q2 = zeros(q.shape(), {dt}).set_requires_grad(true);
    optim::AdamW other(groups(p2, q2), {});
    if (dt == DType::f32) {
      NoGradGuard ng;
      p2.copy_(p);  // f32 parameters are their own master: the model's weights come with them
      q2.copy_(q);
    }
    other.load(path.string());
    EXPECT_EQ(other.step_count(), 2);
    EXPECT_TRUE(bit_equal(p2, p));
    give_grads({p, q}, 30);
    give_grads({p2, q2}, 30);
    opt.step();
    other.step();
    EXPECT_TRUE(bit_equal(p2, p));
    EXPECT_TRUE(bit_equal(q2, q));
    const auto sd = opt.state_dict();
    EXPECT_EQ(sd.items().back().first, "step");
    // An optimiser over other groups refuses the file, naming it and the key.
    optim::AdamW wrong(
        std::vector<optim::ParamGroup>{{"decay", {p2}, {"v"}, 1.0, std::nullopt}, {"plain", {q2}, {"b"}, 1.0, 0.0}},
        {});
    EXPECT_HMOE_ERROR(wrong.load(path.string()), "missing 'decay.v.exp_avg'");
  }
  std::filesystem::remove(path);
}

}  // namespace
