// The self-test: every op that has a CUDA kernel (the MoE ops included; the grouped GEMM
// and FFN on both GEMM backends, hmoe's and cuBLAS's), run on the cuda device and on the CPU
// from the same random inputs (forward and, where differentiable, backward with a
// random cotangent), compared by relative error against the bounds of
// shared/spec/gpu-without-gpu.md. Fresh device blocks are poisoned (NaN) so an
// unwritten output element fails.
#include "tools/hmoe/selftest.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/cuda/allocator.h"
#include "engine/cuda/runtime.h"
#include "hmoe.h"
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"

namespace hmoe::tools {

// Declared in selftest.h (the distributed self-test uses it too).
double rel_error(const Tensor& a, const Tensor& b) {
  const auto x = a.to(Device::cpu()).to_vector(), y = b.to(Device::cpu()).to_vector();
  if (x.size() != y.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) && std::isfinite(y[i])) return INFINITY;
    if (!std::isfinite(y[i])) continue;
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace hmoe::tools

#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
namespace hmoe::tools {
namespace {

double bound_for(DType dt) {
  switch (dt) {
    case DType::f64:
      return 1e-12;
    case DType::f32:
      return 1e-5;
    case DType::bf16:
      return 1e-2;
    case DType::f16:
      return 2e-3;
    default:
      return 0;
  }
}

// A case computes its outputs (and input gradients) on `dev` from CPU inputs.
using CaseFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs, Device dev)>;
struct Case {
  std::string name;
  std::function<std::vector<Tensor>(DType dt, uint64_t seed, bool quick)> inputs;
  CaseFn run;
  std::vector<DType> dtypes;
  bool exact = false;         // integer results or bit-exact by contract (masks, indices)
  bool outputs_only = false;  // several outputs, no input gradients (in-place updates)
};

Tensor rnd(const Shape& s, uint64_t seed, DType dt, double lo = -2, double hi = 2) {
  Generator g(seed);
  return uniform(s, g, lo, hi, {DType::f64}).to(dt);
}
Tensor ids(const Shape& s, uint64_t seed, int64_t n) {
  Generator g(seed);
  return uniform(s, g, 0, double(n) - 1e-9, {DType::f64}).to(DType::i64);
}

// Moves inputs to dev; float inputs become leaves requiring grad.
std::vector<Tensor> to_dev(const std::vector<Tensor>& in, Device dev, bool grad) {
  std::vector<Tensor> out;
  for (const Tensor& t : in) {
    Tensor d = t.to(dev);
    if (grad && is_floating(d.dtype())) d = d.detach().set_requires_grad(true);
    out.push_back(d);
  }
  return out;
}

// Runs y = f(x...) on dev, then backward with a cotangent fixed by the seed; returns y
// and the grads of the float inputs.
CaseFn differentiable(std::function<Tensor(const std::vector<Tensor>&)> f) {
  return [f](const std::vector<Tensor>& in, Device dev) {
    std::vector<Tensor> x = to_dev(in, dev, true);
    Tensor y = f(x);
    Tensor cot = rnd(y.shape(), 99, y.dtype()).to(dev);
    y.backward(cot);
    std::vector<Tensor> out{y.detach()};
    for (const Tensor& t : x)
      if (is_floating(t.dtype())) out.push_back(t.grad());
    return out;
  };
}
CaseFn forward_only(std::function<std::vector<Tensor>(const std::vector<Tensor>&)> f) {
  return [f](const std::vector<Tensor>& in, Device dev) { return f(to_dev(in, dev, false)); };
}

std::string output_label(const Case& cs, size_t i) {
  if (i == 0) return "out";
  return cs.exact || cs.outputs_only ? "out" + std::to_string(i) : "grad" + std::to_string(i - 1);
}

// Case input shapes: a matrix with odd sizes (small ones with --quick).
int64_t rows(bool quick) { return quick ? 37 : 4099; }
int64_t cols(bool quick) { return quick ? 45 : 1000; }
std::vector<Tensor> matrix(DType dt, uint64_t seed, bool quick) { return {rnd({rows(quick), cols(quick)}, seed, dt)}; }
std::vector<DType> floats() { return {DType::f32, DType::bf16}; }

// Elementwise maps, broadcasts and reductions over a [rows, cols] matrix.
void add_elementwise_cases(std::vector<Case>& c) {
  const std::vector<DType> fl = floats();
  auto unary = [&](const char* name, std::function<Tensor(const Tensor&)> f) {
    c.push_back({name, matrix, differentiable([f](const std::vector<Tensor>& x) { return f(x[0]); }), fl});
  };
  unary("exp", [](const Tensor& x) { return exp(x); });
  unary("gelu", [](const Tensor& x) { return gelu(x); });
  unary("silu", [](const Tensor& x) { return silu(x); });
  unary("tanh", [](const Tensor& x) { return tanh(x); });
  unary("sum_rows", [](const Tensor& x) { return sum(x, {1}); });
  unary("sum_cols", [](const Tensor& x) { return sum(x, {0}); });
  unary("max_rows", [](const Tensor& x) { return max(x, 1).first; });
  unary("logsumexp", [](const Tensor& x) { return logsumexp(x, {1}); });
  unary("softmax", [](const Tensor& x) { return softmax(x, -1); });
  unary("log_softmax", [](const Tensor& x) { return log_softmax(x, -1); });
  unary("softmax_dim0", [](const Tensor& x) { return softmax(x, 0); });
  unary("transpose_copy", [](const Tensor& x) { return x.transpose(0, 1).contiguous(); });
  auto binary = [&](const char* name, std::function<Tensor(const Tensor&, const Tensor&)> f) {
    c.push_back({name,
                 [](DType dt, uint64_t s, bool q) {
                   return std::vector<Tensor>{rnd({rows(q), cols(q)}, s, dt), rnd({cols(q)}, s + 1, dt, 0.5, 2)};
                 },
                 differentiable([f](const std::vector<Tensor>& x) { return f(x[0], x[1]); }), fl});
  };
  binary("add_broadcast", [](const Tensor& a, const Tensor& b) { return add(a, b); });
  binary("mul_broadcast", [](const Tensor& a, const Tensor& b) { return mul(a, b); });
  binary("div_broadcast", [](const Tensor& a, const Tensor& b) { return div(a, b); });
  c.push_back({"argmax", matrix,
               forward_only([](const std::vector<Tensor>& x) { return std::vector<Tensor>{argmax(x[0], 1)}; }), fl,
               true});
}

// Norms, losses, indexing, sorting, scans and dropout.
void add_nn_cases(std::vector<Case>& c) {
  const std::vector<DType> fl = floats();
  c.push_back({"layer_norm",
               [](DType dt, uint64_t s, bool q) {
                 return std::vector<Tensor>{rnd({rows(q), cols(q)}, s, dt), rnd({cols(q)}, s + 1, dt),
                                            rnd({cols(q)}, s + 2, dt)};
               },
               differentiable([](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); }), fl});
  c.push_back({"rms_norm",
               [](DType dt, uint64_t s, bool q) {
                 return std::vector<Tensor>{rnd({rows(q), cols(q)}, s, dt), rnd({cols(q)}, s + 1, dt)};
               },
               differentiable([](const std::vector<Tensor>& x) { return rms_norm(x[0], x[1]); }), fl});
  c.push_back({"cross_entropy",
               [](DType dt, uint64_t s, bool q) {
                 return std::vector<Tensor>{rnd({rows(q), cols(q)}, s, dt), ids({rows(q)}, s + 1, cols(q))};
               },
               differentiable([](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1]); }), fl});
  c.push_back({"embedding",
               [](DType dt, uint64_t s, bool q) {
                 return std::vector<Tensor>{rnd({q ? 50 : 32000, q ? 16 : 256}, s, dt), ids({q ? 64 : 8192}, s + 1, q ? 50 : 32000)};
               },
               differentiable([](const std::vector<Tensor>& x) { return embedding(x[0], x[1]); }), fl});
  c.push_back({"gather",
               [](DType dt, uint64_t s, bool q) {
                 return std::vector<Tensor>{rnd({rows(q), cols(q)}, s, dt), ids({rows(q), 8}, s + 1, cols(q))};
               },
               differentiable([](const std::vector<Tensor>& x) { return gather(x[0], 1, x[1]); }), fl});
  c.push_back({"topk_8", matrix, forward_only([](const std::vector<Tensor>& x) {
                 auto [v, i] = topk(x[0], 8, -1);
                 return std::vector<Tensor>{v, i};
               }),
               fl, true});
  c.push_back(
      {"cumsum", matrix, differentiable([](const std::vector<Tensor>& x) { return cumsum(x[0], 1); }), {DType::f32}});
  c.push_back({"dropout_mask", matrix, forward_only([](const std::vector<Tensor>& x) {
                 Generator g(1234);
                 return std::vector<Tensor>{dropout(x[0], 0.25, true, g)};
               }),
               fl, true});
}

// Dense products and the optimiser's kernels.
void add_matmul_optim_cases(std::vector<Case>& c) {
  const std::vector<DType> fl = floats();
  c.push_back({"matmul",
               [](DType dt, uint64_t s, bool q) {
                 const int64_t n = q ? 33 : 1024;
                 return std::vector<Tensor>{rnd({n, n + 3}, s, dt), rnd({n + 3, n - 1}, s + 1, dt)};
               },
               differentiable([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); }), fl});
  c.push_back({"causal_attention",
               [](DType dt, uint64_t s, bool q) {
                 const Shape sh{2, q ? 2 : 8, q ? 19 : 256, q ? 16 : 64};
                 return std::vector<Tensor>{rnd(sh, s, dt, -1, 1), rnd(sh, s + 1, dt, -1, 1), rnd(sh, s + 2, dt, -1, 1)};
               },
               differentiable([](const std::vector<Tensor>& x) { return causal_attention(x[0], x[1], x[2]); }), fl});
  c.push_back({"adamw_update",
               [](DType dt, uint64_t s, bool q) {
                 const int64_t n = q ? 1001 : (int64_t(1) << 22) + 3;
                 return std::vector<Tensor>{rnd({n}, s, DType::f32, -1, 1), rnd({n}, s + 1, DType::f32, -0.1, 0.1),
                                            rnd({n}, s + 2, DType::f32, 1e-4, 1e-2), rnd({n}, s + 3, dt, -1, 1),
                                            rnd({n}, s + 4, dt)};
               },
               forward_only([](const std::vector<Tensor>& x) {
                 // In place on fresh copies: the f32 master, both moments, and the dt copy.
                 std::vector<Tensor> t;
                 for (const Tensor& v : x) t.push_back(v.clone());
                 AdamWStep st;
                 st.lr = 1e-2;
                 st.weight_decay = 0.1;
                 st.step = 5;
                 const bool copy = t[4].dtype() != DType::f32;
                 adamw_update_(t[0], t[1], t[2], t[3], copy ? t[4] : Tensor(), st);
                 return copy ? std::vector<Tensor>{t[0], t[1], t[2], t[4]} : std::vector<Tensor>{t[0], t[1], t[2]};
               }),
               fl, false, true});
  c.push_back({"sum_squares",
               [](DType dt, uint64_t s, bool q) { return std::vector<Tensor>{rnd({q ? 5000 : (1 << 24) + 7}, s, dt)}; },
               forward_only([](const std::vector<Tensor>& x) { return std::vector<Tensor>{sum_squares(x[0])}; }), fl,
               false, true});
}

// MoE kernels. Uneven groups with an empty one; offsets live on the host by contract.
void add_moe_cases(std::vector<Case>& c) {
  const std::vector<DType> fl = floats();
  auto group_offsets = [](int64_t n_rows, int64_t groups) {
    std::vector<int64_t> off(size_t(groups) + 1, 0);
    for (int64_t g = 0; g < groups; ++g) off[size_t(g) + 1] = g == 1 ? off[size_t(g)] : n_rows * (g + 1) / groups;
    off.back() = n_rows;
    return from_vector(off, {groups + 1});
  };
  // The grouped GEMM and FFN on each backend's GEMM: hmoe's kernels and cuBLAS's grouped
  // GEMM (forward and every gradient of both against the CPU).
  for (moe::GroupedGemmBackend be : {moe::GroupedGemmBackend::hmoe, moe::GroupedGemmBackend::cublas}) {
    const std::string suffix = be == moe::GroupedGemmBackend::hmoe ? "" : "/" + std::string(moe::name(be));
    c.push_back({"grouped_gemm" + suffix,
                 [](DType dt, uint64_t s, bool q) {
                   const int64_t m = q ? 61 : 8195, k = q ? 24 : 512, n = q ? 40 : 1024, g = q ? 4 : 8;
                   return std::vector<Tensor>{rnd({m, k}, s, dt, -1, 1), rnd({g, k, n}, s + 1, dt, -1, 1),
                                              rnd({m}, s + 2, dt, 0.5, 1.5), rnd({g, n}, s + 3, dt)};
                 },
                 differentiable([group_offsets, be](const std::vector<Tensor>& x) {
                   return moe::grouped_gemm(x[0], x[1], group_offsets(x[0].size(0), x[1].size(0)), Tensor(), x[2], x[3],
                                            be);
                 }),
                 fl});
    c.push_back({"grouped_ffn" + suffix,  // the expert FFN: GELU fused into both GEMMs and into dh
                 [](DType dt, uint64_t s, bool q) {
                   const int64_t m = q ? 61 : 8195, d = q ? 24 : 256, f = q ? 40 : 1024, g = q ? 4 : 8;
                   return std::vector<Tensor>{rnd({m, d}, s, dt, -1, 1), rnd({g, d, f}, s + 1, dt, -0.3, 0.3),
                                              rnd({g, f}, s + 2, dt), rnd({g, f, d}, s + 3, dt, -0.3, 0.3),
                                              rnd({g, d}, s + 4, dt)};
                 },
                 differentiable([group_offsets, be](const std::vector<Tensor>& x) {
                   return moe::grouped_ffn(x[0], x[1], x[2], x[3], x[4], group_offsets(x[0].size(0), x[1].size(0)),
                                           Tensor(), UnaryOp::gelu_erf, 0, false, be);
                 }),
                 fl});
  }
  c.push_back({"moe_route_combine",
               [](DType dt, uint64_t s, bool q) {
                 const int64_t t = q ? 53 : 8191, e = q ? 6 : 64;
                 return std::vector<Tensor>{rnd({t, e}, s, dt), rnd({t, q ? 20 : 256}, s + 1, dt)};
               },
               // Router top-2, plan, permute to expert order, a per-row map, combine with the
               // gates: gradients reach the logits through the gates and x through both. No
               // renormalisation: renormalised gates sum to 1, and here that would leave the
               // logits an exactly-zero gradient (noise against noise).
               differentiable([](const std::vector<Tensor>& x) {
                 moe::RouterConfig rc;
                 rc.renormalize = false;
                 moe::RouterOutput r = moe::route_topk(x[0], 2, rc);
                 moe::Plan plan = moe::make_plan(r.expert_ids, x[0].size(1));
                 Tensor xs = moe::permute_rows(x[1], plan);
                 return moe::combine(tanh(xs), r.gates.to(xs.dtype()), plan);
               }),
               fl});
  c.push_back({"hyper_adapter",
               [](DType dt, uint64_t s, bool q) {
                 const int64_t t = q ? 45 : 4097, d = q ? 24 : 256, r = q ? 8 : 32, p = q ? 5 : 28;
                 return std::vector<Tensor>{rnd({t, d}, s, dt, -1, 1), ids({t}, s + 1, p), rnd({p, d, r}, s + 2, dt, -0.3, 0.3),
                                            rnd({p, r}, s + 3, dt), rnd({p, r, d}, s + 4, dt, -0.3, 0.3),
                                            rnd({p, d}, s + 5, dt)};
               },
               differentiable(
                   [](const std::vector<Tensor>& x) { return moe::hyper_adapter(x[0], x[1], x[2], x[3], x[4], x[5]); }),
               fl});
}

// Every case, in the order the table prints them.
std::vector<Case> cases() {
  std::vector<Case> c;
  add_elementwise_cases(c);
  add_nn_cases(c);
  add_matmul_optim_cases(c);
  add_moe_cases(c);
  return c;
}

}  // namespace

int run_selftest(const SelftestOptions& o) {
  std::printf("hmoe selftest: %s device: %s\n", cuda::is_emulated() ? "emulated" : "CUDA",
              cuda::properties(0).str().c_str());
  cuda::set_poison_allocations(true);
  std::printf("%-20s %-5s %-7s %12s %10s  %s\n", "kernel", "dtype", "output", "rel. error", "bound", "result");
  int failures = 0, checks = 0;
  for (const Case& cs : cases()) {
    if (!o.filter.empty() && cs.name.find(o.filter) == std::string::npos) continue;
    for (DType dt : cs.dtypes) {
      std::vector<Tensor> in = cs.inputs(dt, o.seed, o.quick), got, ref;
      std::string error;
      try {
        ref = cs.run(in, Device::cpu());
        got = cs.run(in, Device::cuda(0));
        cuda::device_synchronize(0);
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty() || got.size() != ref.size()) {
        ++failures;
        ++checks;
        std::printf("%-20s %-5s %-7s %12s %10s  FAIL: %s\n", cs.name.c_str(), std::string(dtype_name(dt)).c_str(), "-",
                    "-", "-", error.empty() ? "output count differs" : error.c_str());
        continue;
      }
      for (size_t i = 0; i < got.size(); ++i) {
        const double bound = cs.exact || !is_floating(ref[i].dtype()) ? 0.0 : bound_for(ref[i].dtype());
        const double err = rel_error(got[i], ref[i]);
        const bool ok = err <= bound;
        failures += ok ? 0 : 1;
        ++checks;
        std::printf("%-20s %-5s %-7s %12.3e %10.1e  %s\n", cs.name.c_str(), std::string(dtype_name(dt)).c_str(),
                    output_label(cs, i).c_str(), err, bound, ok ? "pass" : "FAIL");
      }
    }
  }
  std::printf("%d of %d checks passed\n", checks - failures, checks);
  return failures;
}

}  // namespace hmoe::tools
#endif
