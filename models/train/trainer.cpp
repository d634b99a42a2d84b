// The step loop: data, the model and its optimiser groups, one step after another with
// evaluation, metrics and checkpoints at their intervals, profiling on request; the checks
// before the first step (memory, the run directory, room for a checkpoint), steps that
// are not finite, and stopping on a signal.
#include "models/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>

#include "engine/io/file.h"
#include "engine/profiler.h"
#include "engine/thread_pool.h"
#include "models/data/dataset.h"
#include "models/hypermoe/lm.h"
#include "models/hypermoe/shapes.h"
#include "models/nn/parallel.h"
#include "models/optim/optimizer.h"
#include "models/train/evaluate.h"
#include "models/train/interrupt.h"
#include "models/train/memory.h"
#include "models/train/metrics.h"
#include "models/train/param_groups.h"
#include "models/train/progress.h"
#include "models/train/run_dir.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::train {

namespace fs = std::filesystem;

namespace {

struct Data {
  data::TokenDataset train, val;
};

// The data, with model.vocab_size honoured (ids at or beyond it are errors) or, when 0,
// set from them (256 for text, the largest token id + 1 for a token file, said aloud).
Data load_data(Config& c, const Progress& progress) {
  data::TokenDataset all;
  if (!c.data.tokens.empty()) {
    all = data::TokenDataset::from_token_file(c.data.tokens, int(c.data.token_width), c.model.vocab_size);
    if (c.model.vocab_size == 0) progress.vocab_from_data(all.vocab_size(), c.data.tokens);
  } else {
    std::vector<std::string> files = c.data.text;
    if (files.empty()) files = data::default_corpus_files();
    HMOE_CHECK(!files.empty(), "train: no data: set data.text (files or directories) or data.tokens; the default ",
               "corpus (/usr/share/games/fortunes, Debian package 'fortunes') is not installed");
    all = data::TokenDataset::from_text_files(files, c.model.vocab_size == 0 ? 256 : c.model.vocab_size);
  }
  c.model.vocab_size = all.vocab_size();
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
// Over several ranks each holds its part of the model (nn::Parallel) and of each batch:
// the sampler draws the whole batch's windows on every rank, each keeps its rows.
struct Training {
  Training(const Config& cfg, const data::TokenDataset& train, const nn::Parallel& par);
  TrainState state() const { return {step, sampler.position(), noise.offset()}; }
  void seek(const TrainState& st);
  // One optimiser step: grad_accum micro-batches forward and backward, clipping, AdamW;
  // the update dropped when the losses or the gradient norm are not finite (s.finite).
  StepMetrics train_step(const OptimConfig& t);

  model::LanguageModel model;
  std::unique_ptr<optim::AdamW> opt;  // the model's parameter groups (param_groups.h)
  data::WindowSampler sampler;
  Generator noise;
  int64_t step = 0;  // steps done

 private:
  // This rank's rows of a batch of the whole job.
  data::Batch my_rows(const data::Batch& b) const;
  // The global gradient norm, every gradient clipped to `clip` (one process: the plain
  // clip_grad_norm_, whose summation order runs before were computed with).
  double clip_gradients(double clip);
  // The mean over the ranks of a value each computed on its rows (the value alone in one
  // process).
  double mean_over_ranks(double v) const;
};

Training::Training(const Config& cfg, const data::TokenDataset& train, const nn::Parallel& par)
    : model(cfg.model, uint64_t(cfg.train.seed), par),
      sampler(train, cfg.model.block_size, uint64_t(cfg.train.seed) ^ 0x5eedULL),
      noise(uint64_t(cfg.train.seed) + 1) {
  place_model(model, cfg);
  model.train();
  opt = make_optimizer(model, cfg.train);
}

void Training::seek(const TrainState& st) {
  step = st.step;
  sampler.set_position(st.sampler_position);
  noise.set_state(noise.seed(), st.noise_offset);
}

constexpr double kNoClip = std::numeric_limits<double>::infinity();

data::Batch Training::my_rows(const data::Batch& b) const {
  const nn::Parallel& par = model.parallel();
  if (par.world_size() == 1) return b;
  const int64_t rows = b.inputs.size(0) / par.world_size(), first = rows * par.world_rank();
  return {b.inputs.narrow(0, first, rows), b.targets.narrow(0, first, rows)};
}

double Training::clip_gradients(double clip) {
  const nn::Parallel& par = model.parallel();
  if (par.world_size() == 1) return optim::clip_grad_norm_(model.parameters(), clip);
  nn::average_gradients(model, par);
  return nn::clip_grad_norm(model, par, clip);
}

double Training::mean_over_ranks(double v) const {
  const nn::Parallel& par = model.parallel();
  if (par.world_size() == 1) return v;
  Tensor t = full({}, v, {DType::f64});
  par.world->all_reduce(t);
  return t.item() / double(par.world_size());
}

StepMetrics Training::train_step(const OptimConfig& t) {
  StepMetrics s;
  s.lr = optim::warmup_cosine_lr(step, t.warmup, t.steps, t.lr, t.min_lr);
  opt->set_lr(s.lr);
  for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
    // Each rank's loss is the mean over its rows; averaged over the ranks (the gradients
    // by average_gradients), the whole batch's. The aux losses are the whole batch's.
    const BatchLoss l = batch_loss(model, my_rows(sampler.next(t.batch_size)), noise);
    s.lm_loss += l.lm.item();
    s.aux_loss += l.aux.item();
    Tensor total = (l.lm + l.aux.to(l.lm.dtype())) * (1.0 / double(t.grad_accum));
    total.backward();
    add_counts(s.expert_counts, l.expert_counts);
  }
  // The norm is computed without clipping too (an infinite bound scales nothing): a
  // gradient that is not finite must be seen before it reaches the weights.
  s.grad_norm = clip_gradients(t.clip > 0 ? t.clip : kNoClip);
  s.lm_loss = mean_over_ranks(s.lm_loss) / double(t.grad_accum);
  s.aux_loss /= double(t.grad_accum);
  if (model.parallel().world_size() > 1)
    for (std::vector<int64_t>& layer : s.expert_counts) {
      Tensor c = from_vector(layer, {int64_t(layer.size())});
      model.parallel().world->all_reduce(c);
      layer = c.to_vector_as<int64_t>();
    }
  s.finite = std::isfinite(s.lm_loss) && std::isfinite(s.aux_loss) && std::isfinite(s.grad_norm);
  if (s.finite) opt->step();
  opt->zero_grad();
  s.step = ++step;
  return s;
}

void check_profile_options(const RunOptions& opts) {
  if (opts.profile_path.empty()) return;
  HMOE_CHECK(opts.profile_steps > 0, "profile: the number of steps to profile must be > 0, got ", opts.profile_steps);
  const fs::path dir = fs::absolute(opts.profile_path).parent_path();
  HMOE_CHECK(fs::is_directory(dir), "profile: cannot write ", opts.profile_path, ": no directory ", dir.string());
  // A build without the counters fails here, before any step, naming the build to make.
  if (opts.profile_emu_counters) {
    const Profiler probe(ProfilerOptions{true});
  }
}

// --profile: profile_steps steps under a Profiler, from this run's second step when it
// has more than one (the first grows the memory pools); then the Chrome trace written
// and the per-op summary printed.
class StepProfiler {
 public:
  // Only the writer (rank 0) profiles over several ranks.
  StepProfiler(const RunOptions& opts, int64_t steps_to_run, bool writer)
      : opts_(opts), first_(steps_to_run > 1 ? 1 : 0), on_(writer && !opts.profile_path.empty()) {}
  // Around the step after `done` of this run's steps.
  void before_step(int64_t done) {
    if (on_ && done == first_) profiler_ = std::make_unique<Profiler>(ProfilerOptions{opts_.profile_emu_counters});
  }
  void after_step(int64_t done, bool last, const Progress& progress) {
    if (!profiler_ || (done != first_ + opts_.profile_steps && !last)) return;
    io::write_file_atomic(opts_.profile_path, profiler_->chrome_trace(), "profile");
    progress.profile(*profiler_, opts_.profile_path, done - first_);
    profiler_.reset();
  }

 private:
  const RunOptions& opts_;
  int64_t first_;
  bool on_;
  std::unique_ptr<Profiler> profiler_;
};

bool every(int64_t interval, int64_t step) { return interval > 0 && step % interval == 0; }

// What was not finite in a step, for the message.
std::string nonfinite_parts(const StepMetrics& s) {
  std::string out;
  auto add = [&](const char* name, double v) {
    if (!std::isfinite(v))
      out += (out.empty() ? "" : ", ") + std::string(name) + (std::isnan(v) ? " nan" : v > 0 ? " inf" : " -inf");
  };
  add("loss", s.lm_loss);
  add("aux loss", s.aux_loss);
  add("gradient norm", s.grad_norm);
  return out;
}

RunDir::Start start_of(const RunOptions& opts) {
  HMOE_CHECK(!(opts.resume && opts.overwrite), "train: --resume continues the run in train.out_dir, --overwrite ",
             "replaces it: give one");
  return opts.resume ? RunDir::Start::resume : opts.overwrite ? RunDir::Start::overwrite : RunDir::Start::fresh;
}

// The config with the data's vocabulary, and the data, after the checks that come before
// any allocation: the config's values and the memory the model, its optimiser and a step
// need.
struct Prepared {
  Config cfg;
  Data data;
};
Prepared prepare(const Config& cfg_in, const Progress& progress) {
  Prepared p{cfg_in, {}};
  validate(p.cfg);                   // before reading any data
  make_data_paths_canonical(p.cfg);  // as the checkpoint records them
  if (p.cfg.train.threads > 0) set_num_threads(int(p.cfg.train.threads));
  p.data = load_data(p.cfg, progress);
  validate(p.cfg);
  check_memory(estimate_training_memory(p.cfg), p.cfg.train.device.device, "train");
  return p;
}

// The layout of a run over the ranks of `world` (one process when null), after checking
// that every rank holds the same config (the one the run records) and this same binary.
nn::Parallel parallel_layout(const Config& cfg, const std::shared_ptr<dist::Communicator>& world) {
  if (!world || world->size() == 1) {
    HMOE_CHECK(cfg.dist.ep == 1, "train: dist.ep = ", cfg.dist.ep, " needs a world of several processes: start ",
               "them with mpirun -np N (N a multiple of dist.ep)");
    return {};
  }
  const int W = world->size();
  // Every rank's hash of (binary build, config) against rank 0's.
  const std::string mine = std::string(__DATE__ " " __TIME__ " ") + config_to_json(cfg);
  Tensor h = from_vector(std::vector<int64_t>{int64_t(std::hash<std::string>{}(mine) >> 1)}, {1});
  Tensor all = world->all_gather(h);
  const std::vector<int64_t> hashes = all.to_vector_as<int64_t>();
  for (int r = 1; r < W; ++r)
    HMOE_CHECK(hashes[size_t(r)] == hashes[0], "train: rank ", r, " holds another config or binary than rank 0 ",
               "(each rank must run the same hmoe with the same config, data paths and overrides)");
  HMOE_CHECK(cfg.train.batch_size % W == 0, "train: train.batch_size = ", cfg.train.batch_size,
             " must be a multiple of the number of processes (", W, "): each takes an equal part of every batch");
  HMOE_CHECK(W % cfg.dist.ep == 0, "train: dist.ep = ", cfg.dist.ep, " must divide the number of processes (", W, ")");
  return nn::Parallel::make(world, cfg.dist.ep);
}

// Under mpirun with the nccl backend, each rank trains on the GPU its communicator
// uses (its node-local rank modulo the node's GPUs): train.device = cuda means that GPU.
// Returns it (-1 where the run has no such choice: one process, the CPU, or a backend
// that takes any device's tensors).
int rank_device(Config& cfg, const dist::Communicator* world) {
  DeviceSetting& d = cfg.train.device;
  if (!world || world->size() == 1 || d.device.type != DeviceType::cuda || world->device() < 0) return -1;
  const int mine = world->device();
  HMOE_CHECK(!d.numbered || d.device.index == mine, "train: train.device = ", d.str(), " names one GPU for every ",
             "rank; under mpirun each rank trains on its own (rank ", world->rank(), ": cuda:", mine,
             "): write train.device = cuda");
  d.device = Device::cuda(mine);
  return mine;
}

// The run directory, locked and writable, with room on its disk for a checkpoint (the
// writer's checks; every rank then knows the paths).
RunDir open_run_dir(const Config& cfg, const RunOptions& opts, bool writer) {
  RunDir run(cfg.train.out_dir, start_of(opts), writer);
  const MemoryEstimate e = estimate_training_memory(cfg);
  if (writer) run.check_room(e.weights + e.optimizer);  // a checkpoint: the weights and the optimiser's state
  return run;
}

// A run after its checks: the data, the run directory, the model and optimiser (resumed
// when asked), the metrics file; `step_loop` runs the steps.
class Run {
 public:
  Run(Prepared p, const RunOptions& opts, const Progress& progress, const nn::Parallel& par);
  TrainResult step_loop();

 private:
  // The validation loss after `done` steps (reads no generator: training continues the same).
  void validate_at(int64_t done);
  void save();  // the metrics made durable first: a resume trims them to the checkpoint
  // A step that was not finite: stopped (the checkpoint of the step before saved, an
  // error) or skipped, as train.on_nonfinite says.
  void not_finite(StepMetrics& s, const TrainState& before);
  // Every rank's wait for the others (nothing in one process).
  void barrier() const;
  // The signal that asks the run to stop, agreed by every rank (0: none).
  int agreed_signal(int mine) const;

  const RunOptions& opts_;
  const Progress& progress_;
  const Config cfg_;
  const Data data_;
  const RunDir run_;
  Training tr_;
  std::optional<MetricsWriter> metrics_;
  TrainResult res_;
  int64_t saved_step_ = -1;  // the step of the checkpoint on disk, -1 if none
};

Run::Run(Prepared p, const RunOptions& opts, const Progress& progress, const nn::Parallel& par)
    : opts_(opts),
      progress_(progress),
      cfg_(std::move(p.cfg)),
      data_(std::move(p.data)),
      run_(open_run_dir(cfg_, opts, par.world_rank() == 0)),
      tr_(cfg_, data_.train, par) {
  barrier();  // the writer's checks and lock first
  if (opts.resume) {
    if (run_.writer() && run_.restore_interrupted_save()) progress_.restored(run_.checkpoint_dir());
    barrier();
    tr_.seek(run_.resume(cfg_, tr_.model, *tr_.opt));
    saved_step_ = tr_.step;
    progress_.resumed(run_.checkpoint_dir(), tr_.step);
  }
  if (run_.writer()) metrics_.emplace(run_.metrics_path(), /*append=*/tr_.step > 0);
  res_.num_parameters = model::count_parameters(cfg_.model);
  res_.last_val_loss = std::nan("");
  res_.checkpoint_dir = run_.checkpoint_dir().string();
  progress_.summary(cfg_.model, res_.num_parameters, data_.train.size(), data_.val.size());
}

// Over several ranks each evaluates every batch whole (the experts need every rank), so
// they all get the one process's loss; evaluation is a small part of a run.
void Run::validate_at(int64_t done) {
  const OptimConfig& t = cfg_.train;
  res_.last_val_loss = evaluate(tr_.model, data_.val, cfg_.model.block_size, t.batch_size, t.eval_batches);
  if (metrics_) metrics_->eval(done, res_.last_val_loss);
  progress_.validation(done, res_.last_val_loss);
}

void Run::save() {
  const CheckpointContent content = checkpoint_content(tr_.model, *tr_.opt);  // every rank
  if (run_.writer()) {
    metrics_->sync();
    run_.save(cfg_, content, tr_.state());
  }
  saved_step_ = tr_.step;
}

void Run::barrier() const {
  if (tr_.model.parallel().world_size() > 1) tr_.model.parallel().world->barrier();
}

int Run::agreed_signal(int mine) const {
  const nn::Parallel& par = tr_.model.parallel();
  if (par.world_size() == 1) return mine;
  Tensor t = from_vector(std::vector<int64_t>{mine}, {1});
  par.world->all_reduce(t, dist::ReduceOp::max);
  return int(t.item<int64_t>());
}

void Run::not_finite(StepMetrics& s, const TrainState& before) {
  if (cfg_.train.on_nonfinite == NonFinitePolicy::skip) {
    s.skipped = true;
    progress_.skipped(s.step, nonfinite_parts(s));
    return;
  }
  tr_.seek(before);  // the step is undone: its update was not applied, its data will be read again
  if (saved_step_ < tr_.step) save();
  HMOE_FAIL("train: step ", s.step, ": ", nonfinite_parts(s), "; the run stopped before applying the step ",
            "(train.on_nonfinite = stop), its checkpoint at step ", tr_.step, " in '", run_.checkpoint_dir().string(),
            "'. Lower train.lr or raise train.clip and start again, or resume with train.on_nonfinite=skip to ",
            "drop such steps");
}

TrainResult Run::step_loop() {
  const OptimConfig& t = cfg_.train;
  // Where a fresh run starts from, for its later evaluations to be read against.
  if (tr_.step == 0 && t.eval_every > 0) validate_at(0);
  const int64_t stop = opts_.stop_at >= 0 ? std::min(opts_.stop_at, t.steps) : t.steps;
  if (tr_.step >= stop) progress_.nothing_to_do(tr_.step, stop);
  const double tokens_per_step =
      double(checked_mul(checked_mul(t.batch_size, t.grad_accum, "train: batch_size x grad_accum"),
                         cfg_.model.block_size, "train: tokens per step"));
  std::optional<InterruptGuard> interrupt;
  if (opts_.stop_on_signals) interrupt.emplace();
  StepProfiler profiler(opts_, stop - tr_.step, run_.writer());
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t run_steps = 1; tr_.step < stop; ++run_steps) {
    profiler.before_step(run_steps - 1);
    const TrainState before = tr_.state();
    StepMetrics s = tr_.train_step(t);
    if (!s.finite) not_finite(s, before);
    profiler.after_step(run_steps, s.step == stop, progress_);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s.tokens_per_s = double(run_steps) * tokens_per_step / std::max(elapsed, 1e-9);
    res_.train_losses.push_back(s.lm_loss);
    res_.tokens_per_second = s.tokens_per_s;
    if (metrics_) metrics_->step(s);
    if (every(t.log_every, s.step) || s.step == t.steps)
      progress_.step(s, t.steps, double(t.steps - s.step) * elapsed / double(run_steps));
    if (every(t.eval_every, s.step) || s.step == stop) validate_at(s.step);
    // The one place the loop asks whether a signal wants it to stop (on any rank: mpirun
    // may deliver it to some).
    const int signal = agreed_signal(interrupt ? interrupt->requested() : 0);
    if (every(t.checkpoint_every, s.step) || s.step == stop || signal) save();
    if (signal) {
      res_.interrupted_by = signal;
      break;
    }
  }
  res_.steps = tr_.step;
  return res_;
}

}  // namespace

TrainResult run_training(const Config& cfg, const RunOptions& opts) {
  check_profile_options(opts);
  start_of(opts);
  const bool writer = !opts.world || opts.world->rank() == 0;
  const Progress progress(opts.quiet || !writer, opts.progress_tty);
  Prepared p = prepare(cfg, progress);
  const nn::Parallel par = parallel_layout(p.cfg, opts.world);
  [[maybe_unused]] const int gpu = rank_device(p.cfg, opts.world.get());
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
  // Kernels launch on the calling thread's current device: this rank's GPU.
  std::optional<cuda::DeviceGuard> on_gpu;
  if (gpu >= 0) on_gpu.emplace(gpu);
#endif
  Run run(std::move(p), opts, progress, par);
  return run.step_loop();
}

}  // namespace hmoe::train
