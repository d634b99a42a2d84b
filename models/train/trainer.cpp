// The training loop (AdamW, warm-up + cosine, clipping, accumulation), evaluation,
// metrics as JSON lines, atomic checkpoints with exact resume, and sampling.
#include "models/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "autograd/grad_mode.h"
#include "engine/io/file.h"
#include "engine/io/safetensors.h"
#include "engine/profiler.h"
#include "engine/thread_pool.h"
#include "models/data/dataset.h"
#include "models/hypermoe/lm.h"
#include "models/optim/optimizer.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/nn.h"
#include "ops/sort.h"

namespace hmoe::train {

namespace fs = std::filesystem;

namespace {

struct Data {
  data::TokenDataset train, val;
};

Data load_data(const Config& c) {
  data::TokenDataset all;
  if (!c.data.tokens.empty()) {
    all = data::TokenDataset::from_token_file(c.data.tokens, int(c.data.token_width));
  } else {
    std::vector<std::string> files = c.data.text;
    if (files.empty()) files = data::default_corpus_files();
    HMOE_CHECK(!files.empty(), "train: no data: set data.text (files or directories) or data.tokens; the default ",
               "corpus (/usr/share/games/fortunes, Debian package 'fortunes') is not installed");
    all = data::TokenDataset::from_text_files(files);
  }
  auto [tr, va] = all.split(c.data.val_fraction, c.model.block_size + 1);
  return {std::move(tr), std::move(va)};
}

DType model_dtype(const Config& c) {
  return c.model.dtype == "bf16" ? DType::bf16 : c.model.dtype == "f16" ? DType::f16 : DType::f32;
}

// The model in the config's precision on the config's device (parameters are created
// in f32 on the CPU from the seed, so every device and precision starts from the same
// weights, rounded).
void place_model(model::LanguageModel& m, const Config& c) {
  if (model_dtype(c) != DType::f32) m.to(model_dtype(c));
  m.to(parse_device(c.train.device));
}

double lm_loss_value(model::LanguageModel& m, const data::Batch& b, Generator& noise, Tensor* loss_out, Tensor* aux_out,
                     std::vector<std::vector<int64_t>>* counts) {
  const Device dev = m.device();
  model::LmOutput out = m.forward(b.inputs.to(dev), noise);
  const int64_t V = out.logits.size(2);
  // The loss in f32 whatever the model's precision.
  Tensor lm = cross_entropy(out.logits.reshape({-1, V}).to(DType::f32), b.targets.to(dev).reshape({-1}));
  if (loss_out) *loss_out = lm;
  if (aux_out) *aux_out = out.aux_loss;
  if (counts) *counts = std::move(out.expert_counts);
  return lm.item();
}

double evaluate(model::LanguageModel& m, const data::TokenDataset& val, int64_t block, int64_t batch,
                int64_t max_batches, int64_t* tokens_out = nullptr) {
  NoGradGuard ng;
  const bool was_training = m.is_training();
  m.eval();
  Generator unused(0);
  double total = 0;
  int64_t tokens = 0;
  for (const data::Batch& b : data::sequential_batches(val, block, batch, max_batches)) {
    const int64_t n = b.targets.numel();
    total += lm_loss_value(m, b, unused, nullptr, nullptr, nullptr) * double(n);
    tokens += n;
  }
  m.train(was_training);
  if (tokens_out) *tokens_out = tokens;
  return tokens ? total / double(tokens) : std::nan("");
}

// Parameters that get weight decay: matrices and expert tensors, not biases or norms.
bool decays(const std::string& name, const Tensor& p) {
  return p.dim() >= 2 && name.find("layer_emb") == std::string::npos;
}

// An AdamW over one group of parameters, at lr_scale of the schedule's learning rate.
// `name` prefixes its state tensors and its step count in the training-state file.
struct ParamGroup {
  std::string name;
  double lr_scale = 1;
  std::unique_ptr<optim::AdamW> opt;
};

// With and without weight decay; the hypernetwork in groups of its own only when
// train.hyper_lr_scale is not 1 (so the checkpoints of other runs keep two groups).
std::vector<ParamGroup> make_groups(model::LanguageModel& m, const train::OptimConfig& t) {
  const bool hyper_apart = t.hyper_lr_scale != 1.0;
  std::map<std::string, std::vector<Tensor>> members;
  for (auto& [name, p] : m.named_parameters()) {
    const bool hyper = hyper_apart && name.rfind("hyper.", 0) == 0;
    members[std::string(hyper ? "hyper_" : "") + (decays(name, p) ? "decay" : "plain")].push_back(p);
  }
  std::vector<ParamGroup> groups;
  for (const char* name : {"decay", "plain", "hyper_decay", "hyper_plain"}) {
    auto it = members.find(name);
    if (it == members.end()) continue;
    optim::AdamWOptions ao;
    ao.lr = t.lr;
    ao.beta1 = t.beta1;
    ao.beta2 = t.beta2;
    ao.eps = t.eps;
    ao.weight_decay = std::string(name).ends_with("decay") ? t.weight_decay : 0.0;
    groups.push_back({name, std::string(name).starts_with("hyper") ? t.hyper_lr_scale : 1.0,
                      std::make_unique<optim::AdamW>(it->second, ao)});
  }
  return groups;
}

struct TrainState {
  int64_t step = 0;
  uint64_t sampler_position = 0;
  uint64_t noise_offset = 0;
};

const char* kModelFile = "model.safetensors";
const char* kStateFile = "state.safetensors";

void save_checkpoint(const fs::path& dir, const Config& cfg, model::LanguageModel& m,
                     const std::vector<ParamGroup>& groups, const TrainState& st) {
  // Write into a fresh directory, then swap it in. A crash at any point leaves one whole
  // checkpoint: the previous in `dir`, or in `<dir>.old` between the two renames (resume
  // puts it back), or the new one.
  const fs::path tmp = dir.string() + ".tmp", old = dir.string() + ".old";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::map<std::string, std::string> meta{{"config", config_to_json(cfg)}, {"format", "hmoe-checkpoint-1"}};
  io::save_safetensors((tmp / kModelFile).string(), m.named_parameters(), meta);
  std::vector<std::pair<std::string, Tensor>> state;
  std::map<std::string, std::string> smeta{{"step", std::to_string(st.step)},
                                           {"sampler_position", std::to_string(st.sampler_position)},
                                           {"noise_offset", std::to_string(st.noise_offset)},
                                           {"config", config_to_json(cfg)}};
  for (const ParamGroup& g : groups) {
    for (auto& [n, t] : g.opt->state_tensors()) state.emplace_back(g.name + "." + n, t);
    smeta[g.name + "_steps"] = std::to_string(g.opt->step_count());
  }
  io::save_safetensors((tmp / kStateFile).string(), state, smeta);
  if (fs::exists(dir)) {
    fs::remove_all(old);
    fs::rename(dir, old);
  }
  fs::rename(tmp, dir);
  io::fsync_directory(fs::absolute(dir).parent_path().string());
  fs::remove_all(old);
}

// A save interrupted between its two renames leaves no `dir` and the last checkpoint
// whole in `<dir>.old`: put it back. True if it did.
bool restore_interrupted_save(const fs::path& dir) {
  const fs::path old = dir.string() + ".old";
  if (fs::exists(dir) || !fs::exists(old / kModelFile) || !fs::exists(old / kStateFile)) return false;
  fs::rename(old, dir);
  io::fsync_directory(fs::absolute(dir).parent_path().string());
  return true;
}

// On resume: the metrics of the steps after the checkpoint's (logged before a crash, to be
// run again) are dropped, and so is a line cut short, so no step is logged twice.
void trim_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const std::string key = "{\"step\": ";
    if (line.rfind(key, 0) != 0 || line.back() != '}') continue;
    const int64_t s = std::strtoll(line.c_str() + key.size(), nullptr, 10);
    if (s <= step) kept += line + "\n";
  }
  in.close();
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    HMOE_CHECK(out.good(), "metrics: cannot write '", tmp.string(), "'");
  }
  fs::rename(tmp, path);
}

uint64_t meta_u64(const std::map<std::string, std::string>& m, const std::string& key, const std::string& file) {
  auto it = m.find(key);
  HMOE_CHECK(it != m.end(), "checkpoint: '", file, "' lacks metadata '", key, "'");
  try {
    size_t used = 0;
    const uint64_t v = std::stoull(it->second, &used);
    HMOE_CHECK(used == it->second.size(), "");
    return v;
  } catch (const std::exception&) {
    HMOE_FAIL("checkpoint: metadata '", key, "' in '", file, "' is not a number: '", it->second, "'");
  }
}

void load_weights(model::LanguageModel& m, const fs::path& file) {
  io::SafeTensors st = io::load_safetensors(file.string());
  m.load_state_dict(st.tensors, /*strict=*/true);
}

Config checkpoint_config(const fs::path& dir) {
  const fs::path f = dir / kModelFile;
  const fs::path old = dir.string() + ".old";
  HMOE_CHECK(fs::exists(f), "checkpoint: '", f.string(), "' does not exist",
             fs::exists(old / kModelFile) ? " (an interrupted save left the last checkpoint in '" + old.string() +
                                                "'; `hmoe train --resume` puts it back)"
                                          : std::string());
  io::SafeTensors st = io::load_safetensors(f.string());
  auto it = st.metadata.find("config");
  HMOE_CHECK(it != st.metadata.end(), "checkpoint: '", f.string(), "' has no config in its metadata");
  return parse_config_json(it->second);
}

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

// The profiled steps' Chrome trace to `path`, their per-op summary to stdout.
void write_profile(const Profiler& p, const std::string& path, int64_t steps, bool quiet) {
  {
    std::ofstream f(path, std::ios::trunc);
    f << p.chrome_trace();
    HMOE_CHECK(f.good(), "profile: failed to write ", path);
  }
  if (quiet) return;
  std::printf("profile of %lld step(s) (trace: %s):\n%s", static_cast<long long>(steps), path.c_str(),
              p.summary().c_str());
}

}  // namespace

TrainResult run_training(const Config& cfg_in, const RunOptions& opts) {
  if (!opts.profile_path.empty()) {
    HMOE_CHECK(opts.profile_steps > 0, "profile: the number of steps to profile must be > 0, got ", opts.profile_steps);
    const fs::path dir = fs::absolute(opts.profile_path).parent_path();
    HMOE_CHECK(fs::is_directory(dir), "profile: cannot write ", opts.profile_path, ": no directory ", dir.string());
  }
  Config cfg = cfg_in;
  if (cfg.train.threads > 0) set_num_threads(int(cfg.train.threads));
  Data d = load_data(cfg);
  cfg.model.vocab_size = d.train.vocab_size();
  validate(cfg);

  const fs::path out_dir = cfg.train.out_dir;
  const fs::path ckpt_dir = out_dir / "checkpoint";
  fs::create_directories(out_dir);

  model::LanguageModel m(cfg.model, uint64_t(cfg.train.seed));
  place_model(m, cfg);
  m.train();
  std::vector<ParamGroup> groups = make_groups(m, cfg.train);

  data::WindowSampler sampler(d.train, cfg.model.block_size, uint64_t(cfg.train.seed) ^ 0x5eedULL);
  Generator noise(uint64_t(cfg.train.seed) + 1);
  TrainState st;

  if (opts.resume) {
    if (restore_interrupted_save(ckpt_dir) && !opts.quiet)
      std::printf("an interrupted save left the last checkpoint in %s.old: restored\n", ckpt_dir.string().c_str());
    // Nothing to continue is an error, not a fresh start over the run's metrics.
    HMOE_CHECK(fs::exists(ckpt_dir / kStateFile), "resume: no checkpoint to continue: '",
               (ckpt_dir / kStateFile).string(), "' does not exist (run without --resume to start afresh)");
    const Config saved = checkpoint_config(ckpt_dir);
    Config a = saved, b = cfg;
    // Extending the run is allowed, on another device too, and so is changing what leaves
    // the results as they are: the thread count, recomputing the experts' pre-activation.
    a.train.steps = b.train.steps = 0;
    a.train.device = b.train.device = "cpu";
    a.train.threads = b.train.threads = 0;
    a.model.expert_recompute = b.model.expert_recompute = false;
    HMOE_CHECK(config_to_json(a) == config_to_json(b), "resume: the checkpoint in '", ckpt_dir.string(),
               "' was written with a different config");
    load_weights(m, ckpt_dir / kModelFile);
    io::SafeTensors s = io::load_safetensors((ckpt_dir / kStateFile).string());
    std::map<std::string, std::vector<std::pair<std::string, Tensor>>> by_group;
    for (auto& [n, t] : s.tensors) {
      const size_t dot = n.find('.');
      const std::string group = dot == std::string::npos ? n : n.substr(0, dot);
      const bool known =
          std::any_of(groups.begin(), groups.end(), [&](const ParamGroup& g) { return g.name == group; });
      HMOE_CHECK(known, "resume: unexpected tensor '", n, "' in the training state");
      by_group[group].emplace_back(n.substr(dot + 1), t);
    }
    const std::string sf = (ckpt_dir / kStateFile).string();
    for (ParamGroup& g : groups) {
      try {
        g.opt->load_state(by_group[g.name], int64_t(meta_u64(s.metadata, g.name + "_steps", sf)));
      } catch (const Error& e) {
        HMOE_FAIL("resume: the training state '", sf, "' does not fit this model's parameter group '", g.name,
                  "': ", e.what());
      }
    }
    st.step = int64_t(meta_u64(s.metadata, "step", sf));
    st.sampler_position = meta_u64(s.metadata, "sampler_position", sf);
    st.noise_offset = meta_u64(s.metadata, "noise_offset", sf);
    sampler.set_position(st.sampler_position);
    noise.set_state(noise.seed(), st.noise_offset);
    trim_metrics(out_dir / "metrics.jsonl", st.step);
    if (!opts.quiet)
      std::printf("resumed from %s at step %lld\n", ckpt_dir.string().c_str(), static_cast<long long>(st.step));
  }

  TrainResult res;
  res.num_parameters = m.num_parameters();
  res.last_val_loss = std::nan("");
  if (!opts.quiet) {
    const std::string experts = cfg.model.ffn == "dense" ? std::string()
                                                         : ", " + std::to_string(cfg.model.n_experts) +
                                                               " experts (top-" + std::to_string(cfg.model.top_k) + ")";
    std::printf("model: %s ffn, %lld layers, d=%lld%s, %lld parameters; data: %lld train / %lld val tokens\n",
                cfg.model.ffn.c_str(), static_cast<long long>(cfg.model.n_layer),
                static_cast<long long>(cfg.model.d_model), experts.c_str(), static_cast<long long>(res.num_parameters),
                static_cast<long long>(d.train.size()), static_cast<long long>(d.val.size()));
  }

  std::ofstream metrics(out_dir / "metrics.jsonl", st.step > 0 ? std::ios::app : std::ios::trunc);
  // Validation loss after `done` steps (reads no generator: training continues the same).
  auto validate = [&](int64_t done) {
    const double vl = evaluate(m, d.val, cfg.model.block_size, cfg.train.batch_size, cfg.train.eval_batches);
    res.last_val_loss = vl;
    metrics << "{\"step\": " << done << ", \"val_loss\": " << vl << ", \"val_perplexity\": " << std::exp(vl) << "}\n";
    if (opts.quiet) return;
    if (opts.progress_tty && done > 0) std::printf("\n");
    std::printf("step %5lld | validation loss %.4f | perplexity %.2f\n", static_cast<long long>(done), vl,
                std::exp(vl));
  };
  // Where a fresh run starts from, for its later evaluations to be read against.
  if (st.step == 0 && cfg.train.eval_every > 0) validate(0);
  const int64_t tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t steps_this_run = 0;
  const int64_t stop = opts.stop_at >= 0 ? std::min(opts.stop_at, cfg.train.steps) : cfg.train.steps;
  // Profiling skips this run's first step (it grows the memory pools) when there are more.
  const int64_t profile_first = stop - st.step > 1 ? 1 : 0;
  std::unique_ptr<Profiler> profiler;
  for (; st.step < stop; ++st.step) {
    if (!opts.profile_path.empty() && steps_this_run == profile_first) profiler = std::make_unique<Profiler>();
    const double lr =
        optim::warmup_cosine_lr(st.step, cfg.train.warmup, cfg.train.steps, cfg.train.lr, cfg.train.min_lr);
    for (ParamGroup& g : groups) g.opt->set_lr(lr * g.lr_scale);
    double lm_sum = 0, aux_sum = 0;
    std::vector<std::vector<int64_t>> counts;
    for (int64_t micro = 0; micro < cfg.train.grad_accum; ++micro) {
      data::Batch b = sampler.next(cfg.train.batch_size);
      Tensor lm, aux;
      std::vector<std::vector<int64_t>> c;
      lm_sum += lm_loss_value(m, b, noise, &lm, &aux, &c);
      aux_sum += aux.item();
      Tensor total = (lm + aux.to(lm.dtype())) * (1.0 / double(cfg.train.grad_accum));
      total.backward();
      if (counts.empty())
        counts = c;
      else
        for (size_t l = 0; l < c.size(); ++l)
          for (size_t e = 0; e < c[l].size(); ++e) counts[l][e] += c[l][e];
    }
    const double gnorm = cfg.train.clip > 0 ? optim::clip_grad_norm_(m.parameters(), cfg.train.clip) : 0.0;
    for (ParamGroup& g : groups) {
      g.opt->step();
      g.opt->zero_grad();
    }
    ++steps_this_run;
    if (profiler && (steps_this_run == profile_first + opts.profile_steps || st.step + 1 == stop)) {
      write_profile(*profiler, opts.profile_path, steps_this_run - profile_first, opts.quiet);
      profiler.reset();
    }
    const double lm_loss = lm_sum / double(cfg.train.grad_accum), aux_loss = aux_sum / double(cfg.train.grad_accum);
    res.train_losses.push_back(lm_loss);

    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = double(steps_this_run * tokens_per_step) / std::max(elapsed, 1e-9);
    res.tokens_per_second = tps;
    const int64_t done = st.step + 1;
    const double eta = double(cfg.train.steps - done) * elapsed / double(steps_this_run);

    // Metrics line: losses apart, and the fraction of routed tokens per expert per layer.
    metrics << "{\"step\": " << done << ", \"lm_loss\": " << lm_loss << ", \"aux_loss\": " << aux_loss
            << ", \"lr\": " << lr << ", \"grad_norm\": " << gnorm << ", \"tokens_per_s\": " << tps
            << ", \"expert_fraction\": [";
    for (size_t l = 0; l < counts.size(); ++l) {
      int64_t tot = 0;
      for (int64_t v : counts[l]) tot += v;
      metrics << (l ? ", [" : "[");
      for (size_t e = 0; e < counts[l].size(); ++e)
        metrics << (e ? ", " : "") << (tot ? double(counts[l][e]) / double(tot) : 0.0);
      metrics << "]";
    }
    metrics << "]}\n";

    if (!opts.quiet && (done % cfg.train.log_every == 0 || done == cfg.train.steps)) {
      char line[256];
      std::snprintf(line, sizeof line, "step %5lld/%lld | loss %.4f | aux %.4f | lr %.2e | %.0f tok/s | ETA %s",
                    static_cast<long long>(done), static_cast<long long>(cfg.train.steps), lm_loss, aux_loss, lr, tps,
                    format_eta(eta).c_str());
      if (opts.progress_tty)
        std::printf("\r%-100s", line);
      else
        std::printf("%s\n", line);
      std::fflush(stdout);
    }
    const bool last = done == stop;
    if ((cfg.train.eval_every > 0 && done % cfg.train.eval_every == 0) || last) validate(done);
    metrics.flush();
    if ((cfg.train.checkpoint_every > 0 && done % cfg.train.checkpoint_every == 0) || last) {
      TrainState save = st;
      save.step = done;
      save.sampler_position = sampler.position();
      save.noise_offset = noise.offset();
      save_checkpoint(ckpt_dir, cfg, m, groups, save);
    }
  }
  res.steps = st.step;
  return res;
}

EvalResult evaluate_checkpoint(const std::string& checkpoint_dir, const std::vector<std::string>& text_files,
                               const std::string& token_file, int token_width, int64_t max_batches) {
  const Config cfg = checkpoint_config(checkpoint_dir);
  data::TokenDataset ds = token_width > 0 ? data::TokenDataset::from_token_file(token_file, token_width)
                                          : data::TokenDataset::from_text_files(text_files);
  HMOE_CHECK(ds.vocab_size() <= cfg.model.vocab_size, "eval: the data's vocabulary (", ds.vocab_size(),
             ") is larger than the model's (", cfg.model.vocab_size, ")");
  model::LanguageModel m(cfg.model, 0);
  place_model(m, cfg);
  load_weights(m, fs::path(checkpoint_dir) / kModelFile);
  EvalResult r;
  r.loss = evaluate(m, ds, cfg.model.block_size, cfg.train.batch_size, max_batches, &r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

std::string generate_text(const std::string& checkpoint_dir, const GenerateOptions& o) {
  const Config cfg = checkpoint_config(checkpoint_dir);
  HMOE_CHECK(cfg.model.vocab_size == 256,
             "generate: text prompts need a byte-level model (vocab 256); this model "
             "has ",
             cfg.model.vocab_size, " tokens");
  HMOE_CHECK(o.temperature >= 0, "generate: temperature must be >= 0");
  model::LanguageModel m(cfg.model, 0);
  place_model(m, cfg);
  load_weights(m, fs::path(checkpoint_dir) / kModelFile);
  m.eval();
  NoGradGuard ng;
  std::vector<int64_t> ctx;
  for (unsigned char ch : o.prompt) ctx.push_back(ch);
  if (ctx.empty()) ctx.push_back('\n');
  std::string out = o.prompt;
  Generator gen(o.seed), unused(0);
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    const int64_t start = std::max<int64_t>(0, int64_t(ctx.size()) - cfg.model.block_size);
    std::vector<int64_t> window(ctx.begin() + start, ctx.end());
    Tensor ids = from_vector(window, {1, int64_t(window.size())}).to(m.device());
    Tensor logits = m.forward(ids, unused).logits.select(0, 0).select(0, -1).to(DType::f64);  // [V]
    std::vector<double> l = logits.to_vector();
    int64_t next = 0;
    if (o.temperature == 0) {
      next = int64_t(std::max_element(l.begin(), l.end()) - l.begin());
    } else {
      std::vector<size_t> order(l.size());
      for (size_t j = 0; j < order.size(); ++j) order[j] = j;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return l[a] > l[b]; });
      const size_t keep = o.top_k > 0 ? std::min<size_t>(size_t(o.top_k), order.size()) : order.size();
      double mx = l[order[0]], z = 0;
      std::vector<double> p(keep);
      for (size_t j = 0; j < keep; ++j) z += p[j] = std::exp((l[order[j]] - mx) / o.temperature);
      const double u = philox_uniform_f64(o.seed, gen.advance(1), 0) * z;
      double acc = 0;
      next = int64_t(order[keep - 1]);
      for (size_t j = 0; j < keep; ++j) {
        acc += p[j];
        if (u <= acc) {
          next = int64_t(order[j]);
          break;
        }
      }
    }
    ctx.push_back(next);
    out.push_back(char(next));
  }
  return out;
}

}  // namespace hmoe::train
