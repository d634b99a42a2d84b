// The hmoe command line: train, presets, eval, generate, and (in builds with the CUDA backend)
// selftest and bench kernels. Parses flags with CLI11 and hands everything else to
// the library; each verb is one function that declares its flags and returns what runs it.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/error.h"
#include "engine/thread_pool.h"
#include "models/hypermoe/shapes.h"
#include "models/train/evaluate.h"
#include "models/train/generate.h"
#include "models/train/interrupt.h"
#include "models/train/trainer.h"
#include "tools/hmoe/plan_ep.h"
#include "tools/hmoe/selftest.h"
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
#include "engine/cuda/runtime.h"
#endif

namespace {

// A verb: its subcommand, and what runs it once the command line is parsed.
struct Verb {
  CLI::App* command;
  std::function<int()> run;
};

// A whole number in [lo, hi], checked before conversion, with a short message
// ("--threads: must be a whole number in [0, 4096], got -1").
CLI::Validator whole_in(int64_t lo, int64_t hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
          return "must be a whole number in " + range + ", got " + s.substr(0, 40);
        return {};
      },
      range);
}

// A finite number >= 0 (a temperature).
CLI::Validator finite_non_negative() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v) || v < 0)
          return "must be a finite number >= 0, got " + s.substr(0, 40);
        return {};
      },
      "NUMBER >= 0");
}

constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();

// The command line that started this process, with --overwrite dropped and --resume added:
// how an interrupted run goes on (under mpirun with the same number of processes, or
// another: a run's maths does not depend on it).
std::string resume_command(const std::vector<std::string>& argv, int world_size) {
  std::string cmd = world_size > 1 ? "mpirun -np " + std::to_string(world_size) : "";
  bool resume = false;
  for (const std::string& a : argv) {
    if (a == "--overwrite") continue;
    resume |= a == "--resume";
    const bool plain = !a.empty() && a.find_first_of(" \t'\"$\\;&|<>()*?`") == std::string::npos;
    cmd += (cmd.empty() ? "" : " ") + (plain ? a : "'" + a + "'");
  }
  return resume ? cmd : cmd + " --resume";
}

// A config file and section.key=value overrides (train and presets).
struct ConfigArgs {
  std::string path;
  std::vector<std::string> overrides;
  void add_to(CLI::App* cmd, const char* path_help, const char* overrides_help) {
    cmd->add_option("--config", path, path_help)->check(CLI::ExistingFile);
    cmd->add_option("overrides", overrides, overrides_help);
  }
};

Verb train_verb(CLI::App& app, const std::vector<std::string>& argv) {
  struct Args {
    ConfigArgs config;
    hmoe::train::RunOptions run;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("train", "train a model from a config file (TOML or JSON)");
  a->config.add_to(cmd, "config file (.toml or .json); defaults if omitted",
                   "section.key=value overrides, e.g. train.steps=100 model.ffn=moe");
  auto* resume = cmd->add_flag("--resume", a->run.resume, "continue from <train.out_dir>/checkpoint");
  cmd->add_flag(
         "--overwrite", a->run.overwrite,
         "replace the run in train.out_dir (its checkpoint and metrics); without it a fresh run there is refused")
      ->excludes(resume);
  cmd->add_flag("--quiet", a->run.quiet, "no progress output");
  cmd->add_option("--stop-at", a->run.stop_at,
                  "stop with a checkpoint after this many steps in all (the schedule stays train.steps'; "
                  "--resume continues it, on any number of processes)")
      ->check(whole_in(1, kMaxCount));
  cmd->add_option("--profile", a->run.profile_path,
                  "profile steps from the second on: Chrome trace JSON to this file, per-op time and memory printed");
  cmd->add_option("--profile-steps", a->run.profile_steps, "steps to profile (default 5)")
      ->check(whole_in(1, kMaxCount));
  cmd->add_flag("--emu-counters", a->run.profile_emu_counters,
                "with --profile on the emulated device: the emulator's memory-access counters of every kernel "
                "(a build with -DHMOE_EMU_COUNTERS=ON; much slower)")
      ->needs("--profile");
  return {cmd, [a, argv] {
            using namespace hmoe::train;
            const Config cfg = load_config(a->config.path, a->config.overrides);
            // The processes of `mpirun -np N hmoe train ...` (one without mpirun).
            hmoe::dist::Options dopts;
            dopts.backend = cfg.dist.backend;
            dopts.timeout_s = cfg.dist.timeout_s;
            const hmoe::dist::Environment env(dopts);
            const int rank = env.world().rank(), world = env.world().size();
            RunOptions opts = a->run;
            opts.progress_tty = rank == 0 && isatty(fileno(stdout)) != 0;
            opts.stop_on_signals = true;
            opts.world = env.world_ptr();
            TrainResult r;
            try {
              r = run_training(cfg, opts);
            } catch (const std::exception& e) {
              // One rank's error ends the job at once, naming the rank (the others would
              // otherwise wait in their next collective until dist.timeout_s).
              if (world > 1) env.abort(std::string("error: ") + e.what(), 2);
              throw;
            }
            if (rank != 0) return r.interrupted_by != 0 ? kExitInterrupted : 0;
            if (r.interrupted_by != 0) {
              std::fflush(stdout);
              std::fprintf(stderr,
                           "hmoe: stopped by %s after step %lld; the checkpoint is saved in %s\n"
                           "continue with: %s\n",
                           r.interrupted_by == SIGINT ? "SIGINT" : "SIGTERM", static_cast<long long>(r.steps),
                           r.checkpoint_dir.c_str(), resume_command(argv, world).c_str());
              return kExitInterrupted;
            }
            std::printf("done: %lld steps, ", static_cast<long long>(r.steps));
            if (std::isfinite(r.last_val_loss)) std::printf("last validation loss %.4f, ", r.last_val_loss);
            std::printf("%.0f tokens/s, %lld parameters\n", r.tokens_per_second,
                        static_cast<long long>(r.num_parameters));
            return 0;
          }};
}

// Each preset's shape and parameter count with each FFN kind, under the config's other
// settings (experts, top-k, adapter rank, moe_every, vocabulary).
int run_presets(const ConfigArgs& a) {
  using hmoe::model::FfnKind;
  std::printf("%-6s %7s %7s %6s %6s %6s %12s %12s %12s\n", "preset", "layers", "d_model", "heads", "d_ff", "block",
              "dense", "moe", "hypermoe");
  for (const char* preset : {"tiny", "small", "base"}) {
    std::vector<std::string> o = a.overrides;
    o.push_back(std::string("model.preset=") + preset);
    hmoe::model::ModelConfig m = hmoe::train::load_config(a.path, o).model;
    if (m.vocab_size == 0) m.vocab_size = 256;  // "from the data": byte-level text, as the default corpus
    std::printf("%-6s %7lld %7lld %6lld %6lld %6lld", preset, static_cast<long long>(m.n_layer),
                static_cast<long long>(m.d_model), static_cast<long long>(m.n_head), static_cast<long long>(m.d_ff),
                static_cast<long long>(m.block_size));
    for (FfnKind ffn : {FfnKind::dense, FfnKind::moe, FfnKind::hypermoe}) {
      hmoe::model::ModelConfig k = m;
      k.ffn = ffn;
      std::printf(" %12lld", static_cast<long long>(hmoe::model::count_parameters(k)));
    }
    std::printf("\n");
  }
  return 0;
}

Verb presets_verb(CLI::App& app) {
  auto a = std::make_shared<ConfigArgs>();
  auto* cmd = app.add_subcommand("presets", "the model presets' shapes and parameter counts per FFN kind");
  a->add_to(cmd, "config file whose other model settings apply",
            "section.key=value overrides, e.g. model.n_experts=16");
  return {cmd, [a] { return run_presets(*a); }};
}

Verb plan_verb(CLI::App& app) {
  struct Args {
    ConfigArgs config;
    hmoe::tools::PlanOptions plan;
    hmoe::tools::PlanCluster cluster{"the given cluster", 0, 0, 0, 0};
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("plan", "plans on paper");
  auto* ep = cmd->add_subcommand("ep", "expert parallelism on GPU clusters: bytes each rank sends per layer, "
                                       "step time from link bandwidths and compute (default: DeepEP's EP 8 / EP 16)");
  cmd->require_subcommand(1);
  a->config.add_to(ep, "config file (.toml or .json)", "section.key=value overrides, e.g. model.preset=base");
  ep->add_option("--peak-tflops", a->plan.peak_tflops, "the GPU's dense bf16 peak (default 989.4, H100 SXM)")
      ->check(finite_non_negative());
  ep->add_option("--mfu", a->plan.mfu, "the fraction of the peak the compute reaches (default 0.5)")
      ->check(CLI::Range(0.01, 1.0));
  ep->add_option("--ep", a->cluster.ep, "plan this cluster instead: its expert-parallel ranks")->check(whole_in(1, 1 << 20));
  ep->add_option("--dispatch-gbps", a->cluster.dispatch_gbps, "... its dispatch bandwidth per rank, GB/s")
      ->check(finite_non_negative());
  ep->add_option("--combine-gbps", a->cluster.combine_gbps, "... its combine bandwidth per rank, GB/s")
      ->check(finite_non_negative());
  ep->add_option("--allreduce-gbps", a->cluster.allreduce_gbps, "... its all-reduce bus bandwidth per rank, GB/s")
      ->check(finite_non_negative());
  return {cmd, [a] {
            if (a->cluster.ep > 0) a->plan.clusters.push_back(a->cluster);
            return hmoe::tools::run_plan_ep(hmoe::train::load_config(a->config.path, a->config.overrides), a->plan);
          }};
}

Verb eval_verb(CLI::App& app) {
  struct Args {
    std::string checkpoint, tokens;
    std::vector<std::string> data;
    int width = 2;
    int64_t max_batches = 50;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "loss and perplexity of a checkpoint on data");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint directory")->required();
  cmd->add_option("--data", a->data, "text files or directories (vocab 256)");
  cmd->add_option("--tokens", a->tokens, "pre-tokenised file instead of text");
  cmd->add_option("--token-width", a->width, "bytes per token in --tokens (2 or 4)")->check(CLI::IsMember({2, 4}));
  cmd->add_option("--max-batches", a->max_batches, "batches to evaluate")->check(whole_in(1, kMaxCount));
  return {cmd, [a] {
            const auto r = hmoe::train::evaluate_checkpoint(a->checkpoint, a->data, a->tokens,
                                                            a->tokens.empty() ? 0 : a->width, a->max_batches);
            std::printf("loss %.4f  perplexity %.3f  (%lld tokens)\n", r.loss, r.perplexity,
                        static_cast<long long>(r.tokens));
            return 0;
          }};
}

Verb generate_verb(CLI::App& app) {
  struct Args {
    std::string checkpoint;
    std::vector<std::string> prompts;
    bool greedy = false;
    hmoe::train::GenerateOptions gen;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("generate", "sample text from a checkpoint (a key/value cache, one step per token)");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint directory")->required();
  cmd->add_option("--prompt", a->prompts,
                  "text to continue (at most block_size bytes); repeated: the prompts run as one batch and each "
                  "result is printed when all are done");
  cmd->add_option("--max-tokens", a->gen.max_tokens, "tokens to sample (printed as they are made)")
      ->check(whole_in(0, kMaxCount));
  cmd->add_option("--temperature", a->gen.temperature, "sampling temperature (0: greedy)")
      ->check(finite_non_negative());
  cmd->add_flag("--greedy", a->greedy, "the likeliest token every time (temperature 0)");
  cmd->add_option("--top-k", a->gen.top_k, "sample among the k most likely tokens (0: all)")
      ->check(whole_in(0, kMaxCount));
  cmd->add_option("--top-p", a->gen.top_p, "then among the fewest whose probabilities sum to >= p (1: all)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a->gen.seed, "sampling seed");
  cmd->add_option("--stop", a->gen.stop, "stop right after the output ends with this text (repeatable)");
  cmd->add_option("--window-keep", a->gen.window_keep,
                  "tokens a full window keeps when it starts over (0: half the block size; block_size: the whole "
                  "window again for every token)")
      ->check(whole_in(0, kMaxCount));
  return {cmd, [a] {
            if (a->greedy) a->gen.temperature = 0;
            if (a->prompts.size() > 1) {
              for (const std::string& text : hmoe::train::generate_texts(a->checkpoint, a->prompts, a->gen)) {
                std::fwrite(text.data(), 1, text.size(), stdout);
                std::fputc('\n', stdout);
              }
              return 0;
            }
            if (!a->prompts.empty()) a->gen.prompt = a->prompts[0];
            hmoe::train::generate(a->checkpoint, a->gen, [](std::string_view bytes) {
              std::fwrite(bytes.data(), 1, bytes.size(), stdout);
              std::fflush(stdout);
            });
            std::fputc('\n', stdout);
            return 0;
          }};
}

// selftest and bench run on the cuda device: a build without the CUDA backend says so,
// and a machine without a device exits 77 (a skip for ctest).
template <typename F>
int on_cuda_device(F run) {
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
  if (!hmoe::cuda::device_available()) {
    if (hmoe::cuda::is_emulated()) hmoe::cuda::check_device(0);  // throws: why the emulated device is off
    std::fprintf(stderr, "hmoe: no CUDA device found: nothing to test\n");
    return 77;
  }
  return run();
#else
  (void)run;
  std::fprintf(stderr,
               "hmoe: this build has no CUDA backend (configured with HMOE_GPU=off); rebuild with "
               "-DHMOE_GPU=cuda (or emu for the emulator)\n");
  return 2;
#endif
}

Verb selftest_verb(CLI::App& app) {
  struct Args {
    hmoe::tools::SelftestOptions o;
    bool dist = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("selftest", "check every CUDA kernel against the CPU on the cuda device");
  cmd->add_option("--filter", a->o.filter,
                  "only kernels whose name contains this (--dist: the sections collectives, group, layer)");
  cmd->add_option("--seed", a->o.seed, "input seed");
  cmd->add_flag("--quick", a->o.quick, "small shapes");
  cmd->add_flag("--dist", a->dist,
                "under `mpirun -np <gpus>`: the communicator's collectives and the expert-parallel layer on each "
                "rank's device against serial references (one process: world size 1)");
  auto* backend = cmd->add_option("--backend", a->o.backend, "--dist: the communicator's backend")
                      ->check(CLI::IsMember({"auto", "single", "mpi", "nccl"}));
  backend->needs(cmd->get_option("--dist"));
  return {cmd, [a] {
            return on_cuda_device([a] {
              const int failures = a->dist ? hmoe::tools::run_selftest_dist(a->o) : hmoe::tools::run_selftest(a->o);
              return failures == 0 ? 0 : 1;
            });
          }};
}

Verb bench_verb(CLI::App& app) {
  auto o = std::make_shared<hmoe::tools::BenchOptions>();
  auto* cmd = app.add_subcommand("bench", "benchmarks");
  auto* kernels = cmd->add_subcommand("kernels", "time the CUDA kernels (CUDA events) against measured peaks");
  cmd->require_subcommand(1);
  kernels->add_option("--filter", o->filter, "only kernels whose name contains this");
  kernels->add_option("--reps", o->reps, "timed runs per kernel (median reported)")->check(whole_in(1, 1000000));
  kernels->add_option("--warmup", o->warmup, "untimed runs first")->check(whole_in(0, 1000000));
  kernels->add_flag("--emu-counters", o->emu_counters,
                    "emulated build with HMOE_EMU_COUNTERS: run each kernel once and print its memory access "
                    "counters (sectors per request, bank conflicts), occupancy and roofline bound instead of timing");
  kernels->add_option("--ptxas", o->ptxas,
                      "with --emu-counters: the real build's ptxas_kernels.tsv (tools/ptxas_gate.sh), for occupancy");
  return {cmd, [o] { return on_cuda_device([o] { return hmoe::tools::run_bench_kernels(*o); }); }};
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (`ulimit -f`) would kill the process mid-write; ignored, the write
  // fails with EFBIG instead, which hmoe reports like a full disk, files left whole.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"hmoe: train, evaluate and sample Mixture-of-Experts language models"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: all cores or HMOE_NUM_THREADS)")
      ->check(whole_in(0, 4096));
  const std::vector<std::string> args(argv, argv + argc);
  const std::vector<Verb> verbs{train_verb(app, args), presets_verb(app),   eval_verb(app), generate_verb(app),
                                plan_verb(app),        selftest_verb(app), bench_verb(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (threads > 0) hmoe::set_num_threads(threads);
    for (const Verb& v : verbs)
      if (*v.command) return v.run();
  } catch (const std::exception& e) {  // hmoe::Error and the standard library's
    std::fprintf(stderr, "hmoe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
