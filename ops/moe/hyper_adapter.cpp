// The hyper adapter op: a composite of the plan (tokens grouped by pattern), the grouped
// FFN with ReLU (gather fused into its first GEMM, biases in the epilogues) and the unpermute.
#include "ops/moe/hyper_adapter.h"

#include "ops/moe/grouped_ffn.h"
#include "ops/moe/token_dispatch.h"

namespace hmoe::moe {

Tensor hyper_adapter(const Tensor& x, const Tensor& token_pattern, const Tensor& w_down, const Tensor& b_down,
                     const Tensor& w_up, const Tensor& b_up) {
  auto meta = [](const Tensor& t) { return t.defined() ? t.meta_str() : std::string("undefined"); };
  HMOE_CHECK(x.defined() && w_down.defined() && w_up.defined() && b_down.defined() && b_up.defined() &&
                 x.dim() == 2 && w_down.dim() == 3 && w_up.dim() == 3 && b_down.dim() == 2 && b_up.dim() == 2,
             "hyper_adapter: expected x [T, d], w_down [P, d, r], b_down [P, r], w_up [P, r, d], b_up [P, d], got ",
             meta(x), ", ", meta(w_down), ", ", meta(b_down), ", ", meta(w_up), ", ", meta(b_up));
  const int64_t P = w_down.size(0), d = x.size(1), r = w_down.size(2);
  HMOE_CHECK(P >= 1 && w_down.size(1) == d && w_up.shape() == (Shape{P, r, d}) && b_down.shape() == (Shape{P, r}) &&
                 b_up.shape() == (Shape{P, d}),
             "hyper_adapter: adapter shapes ", w_down.meta_str(), ", ", b_down.meta_str(), ", ", w_up.meta_str(), ", ",
             b_up.meta_str(), " do not fit x ", x.meta_str());
  HMOE_CHECK(token_pattern.defined() && token_pattern.dim() == 1 && token_pattern.size(0) == x.size(0),
             "hyper_adapter: token_pattern ", meta(token_pattern), " must be integer [T = ", x.size(0), "]");
  const Plan plan = make_plan(token_pattern, P);  // k = 1: perm is the token of each slot
  return unpermute_rows(grouped_ffn(x, w_down, b_down, w_up, b_up, plan.offsets, plan.perm, UnaryOp::relu), plan);
}

}  // namespace hmoe::moe
