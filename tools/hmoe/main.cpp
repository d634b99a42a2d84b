// The hmoe command line: train, presets, eval, generate, and (in builds with the CUDA backend)
// selftest and bench kernels. Parses flags with CLI11 and hands everything else to
// the library.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "engine/error.h"
#include "engine/thread_pool.h"
#include "models/hypermoe/shapes.h"
#include "models/train/evaluate.h"
#include "models/train/generate.h"
#include "models/train/trainer.h"
#include "tools/hmoe/selftest.h"
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
#include "engine/cuda/runtime.h"
#endif

namespace {

int run_train(const std::string& config_path, const std::vector<std::string>& overrides, hmoe::train::RunOptions opts) {
  using namespace hmoe::train;
  Config cfg = load_config(config_path, overrides);
  opts.progress_tty = isatty(fileno(stdout)) != 0;
  const TrainResult r = run_training(cfg, opts);
  std::printf("done: %lld steps, last validation loss %.4f, %.0f tokens/s, %lld parameters\n",
              static_cast<long long>(r.steps), r.last_val_loss, r.tokens_per_second,
              static_cast<long long>(r.num_parameters));
  return 0;
}

// Each preset's shape and parameter count with each FFN kind, under the config's other
// settings (experts, top-k, adapter rank, moe_every, vocabulary).
int run_presets(const std::string& config_path, const std::vector<std::string>& overrides) {
  using namespace hmoe::train;
  using hmoe::model::FfnKind;
  std::printf("%-6s %7s %7s %6s %6s %6s %12s %12s %12s\n", "preset", "layers", "d_model", "heads", "d_ff", "block",
              "dense", "moe", "hypermoe");
  for (const char* preset : {"tiny", "small", "base"}) {
    std::vector<std::string> o = overrides;
    o.push_back(std::string("model.preset=") + preset);
    const hmoe::model::ModelConfig m = load_config(config_path, o).model;
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hmoe: train, evaluate and sample Mixture-of-Experts language models"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: all cores or HMOE_NUM_THREADS)")
      ->check(CLI::NonNegativeNumber);

  auto* train = app.add_subcommand("train", "train a model from a config file (TOML or JSON)");
  std::string config_path;
  std::vector<std::string> overrides;
  hmoe::train::RunOptions topts;
  train->add_option("--config", config_path, "config file (.toml or .json); defaults if omitted")
      ->check(CLI::ExistingFile);
  train->add_option("overrides", overrides, "section.key=value overrides, e.g. train.steps=100 model.ffn=moe");
  train->add_flag("--resume", topts.resume, "continue from <train.out_dir>/checkpoint");
  train->add_flag("--quiet", topts.quiet, "no progress output");
  train->add_option("--profile", topts.profile_path,
                    "profile steps from the second on: Chrome trace JSON to this file, per-op time and memory printed");
  train->add_option("--profile-steps", topts.profile_steps, "steps to profile (default 5)")->check(CLI::PositiveNumber);

  auto* presets = app.add_subcommand("presets", "the model presets' shapes and parameter counts per FFN kind");
  presets->add_option("--config", config_path, "config file whose other model settings apply")
      ->check(CLI::ExistingFile);
  presets->add_option("overrides", overrides, "section.key=value overrides, e.g. model.n_experts=16");

  auto* eval = app.add_subcommand("eval", "loss and perplexity of a checkpoint on data");
  std::string ckpt;
  std::vector<std::string> data;
  std::string tokens;
  int width = 2;
  int64_t max_batches = 50;
  eval->add_option("--checkpoint", ckpt, "checkpoint directory")->required();
  eval->add_option("--data", data, "text files or directories (vocab 256)");
  eval->add_option("--tokens", tokens, "pre-tokenised file instead of text");
  eval->add_option("--token-width", width, "bytes per token in --tokens (2 or 4)")->check(CLI::IsMember({2, 4}));
  eval->add_option("--max-batches", max_batches, "batches to evaluate")->check(CLI::PositiveNumber);

  auto* gen = app.add_subcommand("generate", "sample text from a checkpoint");
  hmoe::train::GenerateOptions gopts;
  std::string gckpt;
  gen->add_option("--checkpoint", gckpt, "checkpoint directory")->required();
  gen->add_option("--prompt", gopts.prompt, "text to continue");
  gen->add_option("--max-tokens", gopts.max_tokens, "tokens to sample")->check(CLI::NonNegativeNumber);
  gen->add_option("--temperature", gopts.temperature, "sampling temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber);
  gen->add_option("--top-k", gopts.top_k, "sample among the k most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber);
  gen->add_option("--seed", gopts.seed, "sampling seed");

  auto* selftest = app.add_subcommand("selftest", "check every CUDA kernel against the CPU on the cuda device");
  hmoe::tools::SelftestOptions sopts;
  selftest->add_option("--filter", sopts.filter, "only kernels whose name contains this");
  selftest->add_option("--seed", sopts.seed, "input seed");
  selftest->add_flag("--quick", sopts.quick, "small shapes");

  auto* bench = app.add_subcommand("bench", "benchmarks");
  auto* bench_kernels = bench->add_subcommand("kernels", "time the CUDA kernels (CUDA events) against measured peaks");
  bench->require_subcommand(1);
  hmoe::tools::BenchOptions bopts;
  bench_kernels->add_option("--filter", bopts.filter, "only kernels whose name contains this");
  bench_kernels->add_option("--reps", bopts.reps, "timed runs per kernel (median reported)")
      ->check(CLI::PositiveNumber);
  bench_kernels->add_option("--warmup", bopts.warmup, "untimed runs first")->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (threads > 0) hmoe::set_num_threads(threads);
    if (*train) return run_train(config_path, overrides, topts);
    if (*presets) return run_presets(config_path, overrides);
    if (*eval) {
      const auto r = hmoe::train::evaluate_checkpoint(ckpt, data, tokens, tokens.empty() ? 0 : width, max_batches);
      std::printf("loss %.4f  perplexity %.3f  (%lld tokens)\n", r.loss, r.perplexity,
                  static_cast<long long>(r.tokens));
      return 0;
    }
    if (*gen) {
      std::cout << hmoe::train::generate_text(gckpt, gopts) << std::endl;
      return 0;
    }
    if (*selftest || *bench) {
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
      if (!hmoe::cuda::device_available()) {
        std::fprintf(stderr, "hmoe: no CUDA device found: nothing to test\n");
        return 77;
      }
      if (*selftest) return hmoe::tools::run_selftest(sopts) == 0 ? 0 : 1;
      return hmoe::tools::run_bench_kernels(bopts);
#else
      std::fprintf(stderr,
                   "hmoe: this build has no CUDA backend (configured with HMOE_GPU=off); rebuild with "
                   "-DHMOE_GPU=cuda (or emu for the emulator)\n");
      return 2;
#endif
    }
  } catch (const hmoe::Error& e) {
    std::fprintf(stderr, "hmoe: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hmoe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
