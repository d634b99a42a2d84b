// Training configuration: model, data and optimisation settings, read from a TOML
// or JSON file plus "section.key=value" overrides, validated strictly (unknown keys
// and wrong types are errors), with model presets (tiny, small, base).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hmoe::train {

struct ModelConfig {
  std::string preset = "tiny";   // tiny | small | base: defaults for the sizes below
  std::string ffn = "hypermoe";  // dense | moe | hypermoe
  int64_t moe_every = 1;         // 1: every block's FFN is MoE; 2: every other block
  int64_t n_layer = 4, d_model = 128, n_head = 4, d_ff = 512, block_size = 128;
  int64_t vocab_size = 256;  // set from the data
  double dropout = 0.0;
  std::string dtype = "f32";  // f32 | bf16 | f16: parameters and activations (bf16/f16 keep f32 master weights)
  // MoE
  int64_t n_experts = 8, top_k = 1;
  std::string router = "topk";       // topk (softmax top-k, noisy in training) | switch
  std::string renormalize = "auto";  // auto (off for k = 1, on otherwise) | true | false
  bool noisy = true;
  double capacity_factor = 0.0;  // 0: dropless
  double jitter = 0.0;           // switch router input jitter
  double aux_cv_coef = 0.01, aux_lb_coef = 0.0, aux_z_coef = 0.0;
  // Recompute the experts' pre-activation [tokens * k, d_ff] in the backward instead of
  // keeping it from the forward: one more GEMM of the experts' six, for about d_ff / d
  // times the layer's input in memory (moe::grouped_ffn's `recompute`).
  bool expert_recompute = false;
  // HyperMoE
  int64_t expert_emb_dim = 128, selection_hidden = 128, hyper_in = 128, hyper_hidden = 128, layer_emb_dim = 10;
  int64_t adapter_rank = 16;
};

struct DataConfig {
  std::vector<std::string> text;  // text files or directories; empty: the default corpus
  std::string tokens;             // a pre-tokenised file instead of text
  int64_t token_width = 2;        // 2 = uint16, 4 = uint32
  double val_fraction = 0.05;
};

struct OptimConfig {
  int64_t steps = 600, batch_size = 16, grad_accum = 1;
  double lr = 2e-3, min_lr = 2e-4;
  int64_t warmup = 50;
  double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
  // The hypernetwork's parameters (hyper.*) train at this fraction of lr. Its heads start
  // near zero (hyperfanin) and Adam moves each weight by about lr per step whatever its
  // gradient's size, so at a pre-training lr the generated adapters grow fast.
  double hyper_lr_scale = 1.0;
  int64_t eval_every = 100, eval_batches = 8, log_every = 10, checkpoint_every = 0;
  int64_t seed = 1337, threads = 0;  // threads 0: all cores
  std::string device = "cpu";        // cpu | cuda | cuda:N
  std::string out_dir = "runs/hmoe";
};

struct Config {
  ModelConfig model;
  DataConfig data;
  OptimConfig train;
};

// Defaults < preset < file < overrides. `path` may be empty (defaults only).
Config load_config(const std::string& path, const std::vector<std::string>& overrides);
// The config as JSON text (written into checkpoints; read back by parse_config_json).
std::string config_to_json(const Config& c);
Config parse_config_json(const std::string& json_text);
// Checks value ranges and consistency (d_model divisible by n_head, k <= N, ...).
void validate(const Config& c);

}  // namespace hmoe::train
