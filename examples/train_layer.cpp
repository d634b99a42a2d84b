// Trains one HyperMoE feed-forward layer inside your own loop: the layer built on its own
// (it owns the hypernetwork that generates its adapters), forward and backward, AdamW
// with the hypernetwork in a group of its own at a lower learning rate, and the layer's
// and the optimiser's state saved.
#include <hmoe/hmoe.h>

#include <cstdio>
#include <memory>

using namespace hmoe;

int main() {
  model::FfnOptions o;  // a small layer: 4 experts of d_model 32 -> d_ff 64, top-2
  o.d_model = 32;
  o.d_ff = 64;
  o.n_experts = 4;
  o.top_k = 2;
  o.expert_emb_dim = o.selection_hidden = o.hyper_in = o.hyper_hidden = 16;
  o.adapter_rank = 4;
  Generator gen(42);
  auto layer = std::make_shared<model::HyperMoEFFN>(o, gen);

  // Its parameters, the hypernetwork's ("hyper.*") among them, in two groups.
  optim::ParamGroup main_group{"main", {}, {}, 1.0, std::nullopt}, hyper_group{"hyper", {}, {}, 0.1, std::nullopt};
  for (const auto& [name, p] : layer->named_parameters()) {
    optim::ParamGroup& g = name.starts_with("hyper.") ? hyper_group : main_group;
    g.params.push_back(p);
    g.param_names.push_back(name);
  }
  optim::AdamW opt({main_group, hyper_group}, {.lr = 3e-3});

  // Learn a fixed random map of 64 tokens: y = tanh(x W).
  const Tensor x = normal({64, o.d_model}, gen);
  const Tensor target = tanh(matmul(x, normal({o.d_model, o.d_model}, gen, 0.0, 0.3)));
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    model::FfnStats stats;  // collects the router's auxiliary (load-balancing) loss
    const Tensor diff = layer->forward(x, stats, gen) - target;  // gen: the router's noise
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
              static_cast<long long>(layer->num_parameters()));

  io::save_safetensors("layer.safetensors", layer->state_dict().items());
  opt.save("optim.safetensors");  // opt.load(...) continues the same run
  layer->eval();
  const Tensor y = layer->forward(x);  // in eval nothing is drawn: no Generator
  std::printf("eval output %lld x %lld\n", static_cast<long long>(y.size(0)), static_cast<long long>(y.size(1)));
  return last < first ? 0 : 1;
}
