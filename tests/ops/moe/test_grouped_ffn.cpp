// Grouped FFN tests: bit-equality with the composite grouped_gemm -> activation ->
// grouped_gemm (forward and every gradient) for every activation, with and without a
// gather index and biases, at every chunking, keeping or recomputing the pre-activation;
// gradcheck; empty groups; half types on the CPU; errors; threads.
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/grouped_gemm.h"
#include "tests/support/moe_ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

Tensor i64(const std::vector<int64_t>& v) { return from_vector(v, {int64_t(v.size())}); }

struct Ffn {
  Tensor x, w1, b1, w2, b2, index, offsets, dy;
};

// Output and the gradient of every input, concatenated, after backward of <y, dy>.
std::vector<double> run(const Ffn& p, const std::function<Tensor()>& fn) {
  Tensor y = fn();
  sum(y * p.dy).backward();
  std::vector<double> out = y.to_vector();
  for (const Tensor* t : {&p.x, &p.w1, &p.b1, &p.w2, &p.b2}) {
    if (!t->defined() || !t->requires_grad()) continue;
    const auto g = t->grad().to_vector();
    out.insert(out.end(), g.begin(), g.end());
    const_cast<Tensor*>(t)->zero_grad();
  }
  return out;
}

// The composite grouped_ffn must equal: grouped_gemm -> activation -> grouped_gemm.
Tensor composite(const Ffn& p, UnaryOp act = UnaryOp::gelu_erf) {
  Tensor h = moe::grouped_gemm(p.x, p.w1, p.offsets, p.index, Tensor(), p.b1);
  return moe::grouped_gemm(moe_ref::ffn_activation(act, h), p.w2, p.offsets, Tensor(), Tensor(), p.b2);
}

Ffn make(bool with_index, bool with_bias, DType dt) {
  const int64_t d = 48, f = 96, e = 40, G = 5;
  const std::vector<int64_t> off{0, 300, 300, 301, 650, 700};  // group 1 empty, group 2 one row
  Ffn p;
  p.offsets = i64(off);
  p.x = randn_t({with_index ? 500 : 700, d}, 1, dt, true);
  if (with_index) {
    std::vector<int64_t> idx(700);
    for (int64_t r = 0; r < 700; ++r) idx[size_t(r)] = r % 97 == 5 ? -1 : (r * 37) % 500;  // repeats, zero rows
    p.index = i64(idx);
  }
  p.w1 = (randn_t({G, d, f}, 2, dt) * 0.2).detach().set_requires_grad(true);
  p.w2 = (randn_t({G, f, e}, 3, dt) * 0.2).detach().set_requires_grad(true);
  if (with_bias) {
    p.b1 = randn_t({G, f}, 4, dt, true);
    p.b2 = randn_t({G, e}, 5, dt, true);
  }
  p.dy = randn_t({700, e}, 6, dt);
  return p;
}

}  // namespace

TEST(MoeGroupedFfn, BitEqualToTheCompositeAtAnyChunking) {
  for (bool with_index : {true, false})
    for (bool with_bias : {true, false}) {
      const Ffn p = make(with_index, with_bias, DType::f32);
      for (UnaryOp act : {UnaryOp::gelu_erf, UnaryOp::gelu_tanh, UnaryOp::relu, UnaryOp::silu}) {
        const auto want = run(p, [&] { return composite(p, act); });
        // 0: the default; 1: every group its own chunk; 301: groups 0-3 then 4; 10^6: one chunk.
        for (int64_t chunk : {0, 1, 301, 1000000})
          for (bool recompute : {false, true}) {
            SCOPED_TRACE("index " + std::to_string(with_index) + " bias " + std::to_string(with_bias) + " act " +
                         std::to_string(int(act)) + " chunk " + std::to_string(chunk) + " recompute " +
                         std::to_string(recompute));
            EXPECT_EQ(want, run(p, [&] {
                        return moe::grouped_ffn(p.x, p.w1, p.b1, p.w2, p.b2, p.offsets, p.index, act, chunk, recompute);
                      }));
          }
      }
    }
}

// Without retain_graph the backward writes dh over the saved pre-activation; with it, a
// second backward must still find the pre-activation intact.
TEST(MoeGroupedFfn, RetainGraphKeepsThePreActivation) {
  const Ffn p = make(true, true, DType::f32);
  for (int64_t chunk : {0, 301, -1}) {  // -1: recomputed
    Tensor y = chunk < 0 ? moe::grouped_ffn(p.x, p.w1, p.b1, p.w2, p.b2, p.offsets, p.index, UnaryOp::gelu_erf, 0, true)
                         : moe::grouped_ffn(p.x, p.w1, p.b1, p.w2, p.b2, p.offsets, p.index, UnaryOp::gelu_erf, chunk);
    std::vector<std::vector<double>> grads[2];
    for (int pass = 0; pass < 2; ++pass) {
      (y * p.dy).backward(ones(y.shape()), /*retain_graph=*/pass == 0);
      for (const Tensor* t : {&p.x, &p.w1, &p.b1, &p.w2, &p.b2}) {
        grads[pass].push_back(t->grad().to_vector());
        const_cast<Tensor*>(t)->zero_grad();
      }
    }
    EXPECT_EQ(grads[0], grads[1]) << "chunk " << chunk;
  }
}

TEST(MoeGroupedFfn, Gradcheck) {
  const std::vector<int64_t> off{0, 2, 2, 5};
  Tensor x = rand_t({4, 3}, 1, -1, 1, DType::f64, true), w1 = rand_t({3, 3, 4}, 2, -1, 1, DType::f64, true);
  Tensor b1 = rand_t({3, 4}, 3, -1, 1, DType::f64, true), w2 = rand_t({3, 4, 2}, 4, -1, 1, DType::f64, true);
  Tensor b2 = rand_t({3, 2}, 5, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        return moe::grouped_ffn(in[0], in[1], in[2], in[3], in[4], i64(off), i64({3, -1, 0, 3, 1}), UnaryOp::gelu_erf,
                                2);
      },
      (std::vector<Tensor>{x, w1, b1, w2, b2}));
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        return moe::grouped_ffn(in[0], in[1], in[2], in[3], in[4], i64(off), i64({3, -1, 0, 3, 1}), UnaryOp::gelu_tanh,
                                0, /*recompute=*/true);
      },
      (std::vector<Tensor>{x, w1, b1, w2, b2}));
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        return moe::grouped_ffn(in[0], in[1], Tensor(), in[2], Tensor(), i64({0, 1, 1, 4}), Tensor(), UnaryOp::silu);
      },
      (std::vector<Tensor>{x, w1, w2}));
}

TEST(MoeGroupedFfn, EmptyGroupsAndNoRows) {
  // 1 thread: the groups run as tasks; 2: in order. Each recomputing or not.
  for (int threads : {1, 2})
    for (bool recompute : {false, true}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + " recompute " + std::to_string(recompute));
      set_num_threads(threads);
      Tensor x = randn_t({0, 3}, 1, DType::f64, true), w1 = randn_t({2, 3, 4}, 2, DType::f64, true);
      Tensor w2 = randn_t({2, 4, 5}, 3, DType::f64, true), b2 = randn_t({2, 5}, 4, DType::f64, true);
      Tensor y = moe::grouped_ffn(x, w1, Tensor(), w2, b2, i64({0, 0, 0}), Tensor(), UnaryOp::gelu_erf, 0, recompute);
      EXPECT_EQ(y.shape(), (Shape{0, 5}));
      sum(y).backward();
      EXPECT_EQ(max_abs_diff(w1.grad(), zeros({2, 3, 4}, {DType::f64})), 0.0);  // no rows: zero weight gradients
      EXPECT_EQ(max_abs_diff(w2.grad(), zeros({2, 4, 5}, {DType::f64})), 0.0);
      EXPECT_EQ(max_abs_diff(b2.grad(), zeros({2, 5}, {DType::f64})), 0.0);
      // x only feeds group 1: group 0's gradients are zero, every chunking.
      Tensor x2 = randn_t({3, 3}, 5, DType::f64, true);
      for (int64_t chunk : {0, 1}) {
        sum(moe::grouped_ffn(x2, w1, Tensor(), w2, b2, i64({0, 0, 3}), Tensor(), UnaryOp::gelu_erf, chunk, recompute))
            .backward();
        EXPECT_EQ(max_abs_diff(w1.grad().select(0, 0), zeros({3, 4}, {DType::f64})), 0.0);
        EXPECT_GT(max_abs_diff(w1.grad().select(0, 1), zeros({3, 4}, {DType::f64})), 0.0);
        w1.zero_grad();
      }
    }
  set_num_threads(2);
}

TEST(MoeGroupedFfn, HalfOnTheCpuIsTheComposite) {
  const Ffn p = make(true, true, DType::f32);
  auto half = [](const Tensor& t) { return t.to(DType::bf16); };
  Tensor yb = moe::grouped_ffn(half(p.x), half(p.w1), half(p.b1), half(p.w2), half(p.b2), p.offsets, p.index);
  EXPECT_EQ(yb.dtype(), DType::bf16);
  // The pre-activation rounded to bf16 before the GELU, as on the device.
  Tensor h = moe::grouped_gemm(half(p.x), half(p.w1), p.offsets, p.index, Tensor(), half(p.b1));
  Tensor want = moe::grouped_gemm(gelu(h), half(p.w2), p.offsets, Tensor(), Tensor(), half(p.b2));
  EXPECT_EQ(max_abs_diff(yb, want), 0.0);
}

// d = e (dx's rows then go over dy's) and f large enough that a recomputed group's h
// exceeds 2 MiB, so its tasks split groups into parts of 128 rows whose weight gradients
// continue each other's sums: still the composite's bits, in every schedule.
TEST(MoeGroupedFfn, RecomputedInPartsGivesTheSameBits) {
  const int64_t d = 16, f = 4096, G = 5;
  const std::vector<int64_t> off{0, 300, 300, 301, 650, 700};
  Ffn p;
  p.offsets = i64(off);
  p.x = randn_t({500, d}, 1, DType::f32, true);
  std::vector<int64_t> idx(700);
  for (int64_t r = 0; r < 700; ++r) idx[size_t(r)] = r % 97 == 5 ? -1 : (r * 37) % 500;
  p.index = i64(idx);
  p.w1 = (randn_t({G, d, f}, 2, DType::f32) * 0.2).detach().set_requires_grad(true);
  p.w2 = (randn_t({G, f, d}, 3, DType::f32) * 0.05).detach().set_requires_grad(true);
  p.b1 = randn_t({G, f}, 4, DType::f32, true);
  p.b2 = randn_t({G, d}, 5, DType::f32, true);
  p.dy = randn_t({700, d}, 6, DType::f32);
  const auto want = run(p, [&] { return composite(p); });
  for (int threads : {1, 2, 3})  // 1, 2: groups as tasks (in parts); 3: chunks in order
    for (bool recompute : {false, true}) {
      set_num_threads(threads);
      EXPECT_EQ(want, run(p,
                          [&] {
                            return moe::grouped_ffn(p.x, p.w1, p.b1, p.w2, p.b2, p.offsets, p.index, UnaryOp::gelu_erf,
                                                    0, recompute);
                          }))
          << "threads " << threads << " recompute " << recompute;
    }
  set_num_threads(2);
}

// Frozen experts (only x needs a gradient): dx alone, as tasks and in order.
TEST(MoeGroupedFfn, FrozenWeightsGiveTheInputGradient) {
  Ffn p = make(true, true, DType::f32);
  for (Tensor* t : {&p.w1, &p.b1, &p.w2, &p.b2}) *t = t->detach();
  const auto want = run(p, [&] { return composite(p); });
  for (int threads : {1, 3})  // groups as tasks; chunks in order
    for (bool recompute : {false, true}) {
      set_num_threads(threads);
      EXPECT_EQ(want, run(p, [&] {
                  return moe::grouped_ffn(p.x, p.w1, p.b1, p.w2, p.b2, p.offsets, p.index, UnaryOp::gelu_erf, 0,
                                          recompute);
                }))
          << "threads " << threads << " recompute " << recompute;
    }
  set_num_threads(2);
}

// Recomputing runs its chunks as tasks on the CPU (the kernels inline on one thread, their
// tiles not split): the bits must not depend on that, on the thread count or on the type.
TEST(MoeGroupedFfn, DeterministicAcrossThreadCountsAndRecompute) {
  for (DType dt : {DType::f32, DType::f64}) {
    const Ffn p = make(true, true, dt);
    auto go = [&](bool recompute) {
      return run(p, [&] {
        return moe::grouped_ffn(p.x, p.w1, p.b1, p.w2, p.b2, p.offsets, p.index, UnaryOp::gelu_erf, 0, recompute);
      });
    };
    set_num_threads(1);
    const auto a = go(false);
    EXPECT_EQ(a, go(true)) << dtype_name(dt);
    for (int threads : {2, 3}) {
      set_num_threads(threads);
      EXPECT_EQ(a, go(false)) << dtype_name(dt) << " threads " << threads;
      EXPECT_EQ(a, go(true)) << dtype_name(dt) << " threads " << threads;
    }
  }
  set_num_threads(2);
}

TEST(MoeGroupedFfn, Errors) {
  Tensor x = zeros({7, 3}), w1 = zeros({2, 3, 4}), w2 = zeros({2, 4, 5}), off = i64({0, 3, 7});
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), zeros({2, 3, 5}), Tensor(), off), "[G, f, e]");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, zeros({2, 2, 4}), Tensor(), w2, Tensor(), off), "[X, d]");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2.to(DType::f64), Tensor(), off), "one dtype");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, zeros({2, 5}), w2, Tensor(), off), "b1 must be");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2, zeros({3, 5}), off), "b2 must be");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2, Tensor(), off, Tensor(), UnaryOp::exp), "activation");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2, Tensor(), off, Tensor(), UnaryOp::relu, -1), "chunk_rows");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2, Tensor(), i64({0, 3, 6})), "from 0 to M");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2, Tensor(), i64({0, 4, 3})), "must not decrease");
  EXPECT_HMOE_ERROR(moe::grouped_ffn(x, w1, Tensor(), w2, Tensor(), i64({0, 1, 2}), i64({0, 7})), "out of range");
}
