// The step loop: data, the model and its optimiser groups, one step after another with
// evaluation, metrics and checkpoints at their intervals, profiling on request.
#include "models/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>

#include "engine/profiler.h"
#include "engine/thread_pool.h"
#include "models/data/dataset.h"
#include "models/hypermoe/lm.h"
#include "models/optim/optimizer.h"
#include "models/train/evaluate.h"
#include "models/train/metrics.h"
#include "models/train/param_groups.h"
#include "models/train/progress.h"
#include "models/train/run_dir.h"
#include "ops/elementwise.h"

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

// Adds one micro-batch's tokens per expert per MoE layer to the step's.
void add_counts(std::vector<std::vector<int64_t>>& sum, const std::vector<std::vector<int64_t>>& c) {
  if (sum.empty()) {
    sum = c;
    return;
  }
  for (size_t l = 0; l < c.size(); ++l)
    for (size_t e = 0; e < c[l].size(); ++e) sum[l][e] += c[l][e];
}

// What the step loop advances: the model, its optimiser groups, the window sampler, the
// noise generator (router noise, dropout) and the step count, all restored on resume.
struct Training {
  Training(const Config& cfg, const data::TokenDataset& train);
  TrainState state() const { return {step, sampler.position(), noise.offset()}; }
  void seek(const TrainState& st);
  // One optimiser step: grad_accum micro-batches forward and backward, clipping, AdamW.
  StepMetrics train_step(const OptimConfig& t);

  model::LanguageModel model;
  ParamGroups groups;
  data::WindowSampler sampler;
  Generator noise;
  int64_t step = 0;  // steps done
};

Training::Training(const Config& cfg, const data::TokenDataset& train)
    : model(cfg.model, uint64_t(cfg.train.seed)),
      sampler(train, cfg.model.block_size, uint64_t(cfg.train.seed) ^ 0x5eedULL),
      noise(uint64_t(cfg.train.seed) + 1) {
  place_model(model, cfg);
  model.train();
  groups = ParamGroups(model, cfg.train);
}

void Training::seek(const TrainState& st) {
  step = st.step;
  sampler.set_position(st.sampler_position);
  noise.set_state(noise.seed(), st.noise_offset);
}

StepMetrics Training::train_step(const OptimConfig& t) {
  StepMetrics s;
  s.lr = optim::warmup_cosine_lr(step, t.warmup, t.steps, t.lr, t.min_lr);
  groups.set_lr(s.lr);
  for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
    const BatchLoss l = batch_loss(model, sampler.next(t.batch_size), noise);
    s.lm_loss += l.lm.item();
    s.aux_loss += l.aux.item();
    Tensor total = (l.lm + l.aux.to(l.lm.dtype())) * (1.0 / double(t.grad_accum));
    total.backward();
    add_counts(s.expert_counts, l.expert_counts);
  }
  s.grad_norm = t.clip > 0 ? optim::clip_grad_norm_(model.parameters(), t.clip) : 0.0;
  groups.step();
  s.lm_loss /= double(t.grad_accum);
  s.aux_loss /= double(t.grad_accum);
  s.step = ++step;
  return s;
}

void check_profile_options(const RunOptions& opts) {
  if (opts.profile_path.empty()) return;
  HMOE_CHECK(opts.profile_steps > 0, "profile: the number of steps to profile must be > 0, got ", opts.profile_steps);
  const fs::path dir = fs::absolute(opts.profile_path).parent_path();
  HMOE_CHECK(fs::is_directory(dir), "profile: cannot write ", opts.profile_path, ": no directory ", dir.string());
}

// --profile: profile_steps steps under a Profiler, from this run's second step when it
// has more than one (the first grows the memory pools); then the Chrome trace written
// and the per-op summary printed.
class StepProfiler {
 public:
  StepProfiler(const RunOptions& opts, int64_t steps_to_run) : opts_(opts), first_(steps_to_run > 1 ? 1 : 0) {}
  // Around the step after `done` of this run's steps.
  void before_step(int64_t done) {
    if (!opts_.profile_path.empty() && done == first_) profiler_ = std::make_unique<Profiler>();
  }
  void after_step(int64_t done, bool last, const Progress& progress) {
    if (!profiler_ || (done != first_ + opts_.profile_steps && !last)) return;
    {
      std::ofstream f(opts_.profile_path, std::ios::trunc);
      f << profiler_->chrome_trace();
      HMOE_CHECK(f.good(), "profile: failed to write ", opts_.profile_path);
    }
    progress.profile(*profiler_, opts_.profile_path, done - first_);
    profiler_.reset();
  }

 private:
  const RunOptions& opts_;
  int64_t first_;
  std::unique_ptr<Profiler> profiler_;
};

bool every(int64_t interval, int64_t step) { return interval > 0 && step % interval == 0; }

}  // namespace

TrainResult run_training(const Config& cfg_in, const RunOptions& opts) {
  check_profile_options(opts);
  Config cfg = cfg_in;
  const OptimConfig& t = cfg.train;
  if (t.threads > 0) set_num_threads(int(t.threads));
  const Data d = load_data(cfg);
  cfg.model.vocab_size = d.train.vocab_size();
  validate(cfg);

  const RunDir run(t.out_dir);
  const Progress progress(opts.quiet, opts.progress_tty);
  Training tr(cfg, d.train);
  if (opts.resume) {
    if (run.restore_interrupted_save()) progress.restored(run.checkpoint_dir());
    tr.seek(run.resume(cfg, tr.model, tr.groups));
    progress.resumed(run.checkpoint_dir(), tr.step);
  }
  TrainResult res;
  res.num_parameters = tr.model.num_parameters();
  res.last_val_loss = std::nan("");
  progress.summary(cfg.model, res.num_parameters, d.train.size(), d.val.size());

  MetricsWriter metrics(run.metrics_path(), /*append=*/tr.step > 0);
  // The validation loss after `done` steps (reads no generator: training continues the same).
  auto validate_at = [&](int64_t done) {
    res.last_val_loss = evaluate(tr.model, d.val, cfg.model.block_size, t.batch_size, t.eval_batches);
    metrics.eval(done, res.last_val_loss);
    progress.validation(done, res.last_val_loss);
  };
  // Where a fresh run starts from, for its later evaluations to be read against.
  if (tr.step == 0 && t.eval_every > 0) validate_at(0);
  const int64_t stop = opts.stop_at >= 0 ? std::min(opts.stop_at, t.steps) : t.steps;
  const int64_t tokens_per_step = t.batch_size * t.grad_accum * cfg.model.block_size;
  StepProfiler profiler(opts, stop - tr.step);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t run_steps = 1; tr.step < stop; ++run_steps) {
    profiler.before_step(run_steps - 1);
    StepMetrics s = tr.train_step(t);
    profiler.after_step(run_steps, s.step == stop, progress);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s.tokens_per_s = double(run_steps * tokens_per_step) / std::max(elapsed, 1e-9);
    res.train_losses.push_back(s.lm_loss);
    res.tokens_per_second = s.tokens_per_s;
    metrics.step(s);
    if (every(t.log_every, s.step) || s.step == t.steps)
      progress.step(s, t.steps, double(t.steps - s.step) * elapsed / double(run_steps));
    if (every(t.eval_every, s.step) || s.step == stop) validate_at(s.step);
    metrics.flush();
    if (every(t.checkpoint_every, s.step) || s.step == stop) run.save(cfg, tr.model, tr.groups, tr.state());
  }
  res.steps = tr.step;
  return res;
}

}  // namespace hmoe::train
