// What the inference tests share: a small LM with every weight drawn wide (so logits
// and routing differ clearly from token to token), and the no-cache reference: the
// whole window through LanguageModel::forward for every token.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "models/hypermoe/lm.h"
#include "ops/factory.h"
#include "tests/support/model_util.h"

namespace hmoe::testing {

// small_lm_config with `ffn` blocks, 4 experts top-2, block 16, every weight N(0, 0.3).
inline std::unique_ptr<model::LanguageModel> wide_lm(const std::string& ffn, uint64_t seed = 7) {
  model::ModelConfig c = small_lm_config(4, 2);
  c.ffn = model::parse_ffn_kind(ffn);
  c.block_size = 16;
  auto m = std::make_unique<model::LanguageModel>(c, seed);
  Generator gen(seed + 100);
  const NoGradGuard ng;
  for (Tensor& p : m->parameters()) p.copy_(normal(p.shape(), gen, 0.0, 0.3, {p.dtype(), p.device()}));
  m->eval();
  return m;
}

// The last position's logits (f32 [V] on the CPU) of the window's last block_size tokens.
inline std::vector<float> full_logits(model::LanguageModel& m, const std::vector<int64_t>& tokens) {
  const NoGradGuard ng;
  const int64_t n = std::min<int64_t>(int64_t(tokens.size()), m.config().block_size);
  const std::vector<int64_t> window(tokens.end() - n, tokens.end());
  Generator unused(0);
  const Tensor ids = from_vector(window, {1, n}).to(m.device());
  return m.forward(ids, unused)
      .logits.select(0, 0)
      .select(0, -1)
      .to(DType::f32)
      .to(Device::cpu())
      .to_vector_as<float>();
}

// max |a - b| / max |b|.
inline double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, double(std::abs(a[i] - b[i])));
    den = std::max(den, double(std::abs(b[i])));
  }
  return num / std::max(den, 1e-30);
}

inline int64_t argmax(const std::vector<float>& l) { return int64_t(std::max_element(l.begin(), l.end()) - l.begin()); }

}  // namespace hmoe::testing
