// Trains one HyperMoE feed-forward layer inside your own loop: build the layer and the
// hypernetwork that generates its adapters, run forward and backward, step AdamW.
#include <hmoe/hmoe.h>
#include <hmoe/models/hypermoe/ffn.h>
#include <hmoe/models/optim/optimizer.h>

#include <cstdio>
#include <memory>

using namespace hmoe;

int main() {
  model::ModelConfig cfg;  // a small layer: 4 experts of d_model 32 -> d_ff 64, top-2
  cfg.d_model = 32;
  cfg.d_ff = 64;
  cfg.n_experts = 4;
  cfg.top_k = 2;
  cfg.expert_emb_dim = cfg.selection_hidden = cfg.hyper_in = cfg.hyper_hidden = 16;
  cfg.adapter_rank = 4;

  Generator gen(42);
  // The hypernetwork is shared by all HyperMoE layers of a model; the layer does not
  // own it, so its parameters join the optimiser's list here.
  auto hyper = std::make_shared<model::HyperNetwork>(cfg, /*n_moe_layers=*/1, gen);
  model::HyperMoEFFN layer(cfg, /*moe_layer=*/0, hyper, gen);
  std::vector<Tensor> params = layer.parameters();
  for (const Tensor& p : hyper->parameters()) params.push_back(p);
  optim::AdamW opt(params, {.lr = 3e-3});

  // Learn a fixed random map of 64 tokens: y = tanh(x W).
  const Tensor x = normal({64, cfg.d_model}, gen);
  const Tensor target = tanh(matmul(x, normal({cfg.d_model, cfg.d_model}, gen, 0.0, 0.3)));
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    model::FfnStats stats;  // collects the router's auxiliary (load-balancing) loss
    const Tensor y = layer.forward(x, stats, gen);
    const Tensor diff = y - target;
    Tensor loss = mean(diff * diff);
    if (stats.aux_loss.defined()) loss = loss + stats.aux_loss;
    opt.zero_grad();
    loss.backward();
    opt.step();
    last = loss.item();
    if (step == 0) first = last;
    if (step % 10 == 0) std::printf("step %2d  loss %.4f\n", step, last);
  }
  std::printf("loss %.4f -> %.4f over %lld parameters\n", first, last,
              static_cast<long long>(layer.num_parameters() + hyper->num_parameters()));
  return last < first ? 0 : 1;
}
