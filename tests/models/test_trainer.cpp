// The trainer: the loss falls on a learnable stream, resume is bit-exact, and bad
// configs or checkpoints give clear errors without damaging what was written.
#include <filesystem>
#include <fstream>
#include <iterator>

#include "models/hypermoe/lm.h"
#include "models/hypermoe/shapes.h"
#include "models/train/evaluate.h"
#include "models/train/generate.h"
#include "models/train/trainer.h"
#include "tests/support/trainer_util.h"
#include "tests/support/test_util.h"

using namespace hmoe;
namespace fs = std::filesystem;

using hmoe::testing::scratch;
using hmoe::testing::tiny;

TEST(Trainer, ResumeIsBitExact) {
  // hyper_lr_scale != 1 puts the hypernetwork in optimizer groups of its own (own state
  // tensors and step counts in the checkpoint); both layouts resume exactly.
  std::vector<double> first_losses;
  for (double scale : {1.0, 0.25}) {
    SCOPED_TRACE("hyper_lr_scale " + std::to_string(scale));
    fs::path dir = scratch("resume");
    train::Config c = tiny(dir, "hypermoe");
    train::RunOptions q;
    q.quiet = true;
    c.train.steps = 8;
    c.train.grad_accum = 2;
    c.train.hyper_lr_scale = scale;
    const auto straight = train::run_training(c, q);
    ASSERT_EQ(straight.train_losses.size(), 8u);

    c.train.out_dir = (dir / "run2").string();
    q.stop_at = 4;
    const auto first = train::run_training(c, q);
    q.stop_at = -1;
    q.resume = true;
    c.model.expert_recompute = true;  // the same results: resuming with it is allowed
    const auto second = train::run_training(c, q);
    c.model.expert_recompute = false;
    ASSERT_EQ(first.train_losses.size() + second.train_losses.size(), 8u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(first.train_losses[i], straight.train_losses[i]) << i;
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(second.train_losses[i], straight.train_losses[4 + i]) << i;
    EXPECT_EQ(second.last_val_loss, straight.last_val_loss);
    if (first_losses.empty()) {
      first_losses = straight.train_losses;
    } else {
      // The hypernetwork's slower steps change the losses after the first update.
      EXPECT_EQ(straight.train_losses[0], first_losses[0]);
      EXPECT_NE(straight.train_losses[7], first_losses[7]);
      // Resuming with another scale is another config.
      c.train.hyper_lr_scale = 1.0;
      EXPECT_HMOE_ERROR(train::run_training(c, q), "different config");
    }
    fs::remove_all(dir);
  }
}

TEST(Trainer, LossFallsForEachFfnKind) {
  fs::path dir = scratch("falls");
  for (std::string ffn : {"dense", "moe", "hypermoe"}) {
    train::Config c = tiny(dir, ffn);
    c.train.steps = 30;
    c.train.eval_every = 0;
    train::RunOptions q;
    q.quiet = true;
    q.overwrite = true;  // one run directory for the three
    const auto r = train::run_training(c, q);
    double first = 0, last = 0;
    for (int i = 0; i < 5; ++i)
      first += r.train_losses[size_t(i)] / 5, last += r.train_losses[r.train_losses.size() - 1 - size_t(i)] / 5;
    EXPECT_LT(last, first - 0.5) << ffn;
    EXPECT_TRUE(fs::exists(fs::path(c.train.out_dir) / "checkpoint" / "model.safetensors"));
    // Evaluate and sample from the checkpoint.
    const auto ev =
        train::evaluate_checkpoint((fs::path(c.train.out_dir) / "checkpoint").string(), c.data.text, "", 0, 4);
    EXPECT_TRUE(std::isfinite(ev.loss));
    train::GenerateOptions g;
    g.prompt = "the ";
    g.max_tokens = 20;
    g.seed = 3;
    const std::string s1 = train::generate_text((fs::path(c.train.out_dir) / "checkpoint").string(), g);
    const std::string s2 = train::generate_text((fs::path(c.train.out_dir) / "checkpoint").string(), g);
    EXPECT_EQ(s1.size(), 24u);
    EXPECT_EQ(s1, s2);
  }
  fs::remove_all(dir);
}

TEST(Trainer, BadConfigsAndCheckpoints) {
  fs::path dir = scratch("bad");
  {
    std::ofstream f(dir / "a.toml");
    f << "[model]\nd_modle = 3\n";
  }
  EXPECT_HMOE_ERROR(train::load_config((dir / "a.toml").string(), {}), "unknown key 'model.d_modle'");
  {
    std::ofstream f(dir / "b.json");
    f << R"({"train": {"lr": "fast"}})";
  }
  EXPECT_HMOE_ERROR(train::load_config((dir / "b.json").string(), {}), "'train.lr' must be a number");
  EXPECT_HMOE_ERROR(train::load_config("", {"model.top_k=9"}), "top_k");
  EXPECT_HMOE_ERROR(train::load_config("", {"model.preset=huge"}), "preset");
  EXPECT_HMOE_ERROR(train::load_config("", {"nonsense"}), "section.key=value");
  EXPECT_HMOE_ERROR(train::load_config("", {"train.hyper_lr_scale=0"}), "train.hyper_lr_scale must be a finite number");
  {
    std::ofstream f(dir / "c.toml");
    f << "[model\n";
  }
  EXPECT_HMOE_ERROR(train::load_config((dir / "c.toml").string(), {}), "not valid TOML");
  const auto ok = train::load_config("", {"model.preset=small", "train.steps=5"});
  EXPECT_EQ(ok.model.d_model, 256);
  EXPECT_EQ(ok.train.steps, 5);
  // One file where a list of them stands.
  EXPECT_EQ(train::load_config("", {"data.text=a.txt"}).data.text, std::vector<std::string>{"a.txt"});
  EXPECT_HMOE_ERROR(train::load_config("", {"data.text=[1]"}), "'data.text' must be a list");

  // Empty data.
  train::Config c = tiny(dir, "moe");
  { std::ofstream f(dir / "empty.txt"); }
  c.data.text = {(dir / "empty.txt").string()};
  train::RunOptions q;
  q.quiet = true;
  EXPECT_HMOE_ERROR(train::run_training(c, q), "empty");
  fs::create_directories(dir / "no_files");
  c.data.text = {(dir / "no_files").string()};
  EXPECT_HMOE_ERROR(train::run_training(c, q), "holds no files");
  c.data.text = {(dir / "missing.txt").string()};
  EXPECT_HMOE_ERROR(train::run_training(c, q), "does not exist");

  // A corrupt checkpoint is refused, and the one on disk is left as it was.
  c = tiny(dir, "moe");
  c.train.steps = 2;
  train::run_training(c, q);
  const fs::path model_file = fs::path(c.train.out_dir) / "checkpoint" / "model.safetensors";
  {
    std::ofstream f(model_file, std::ios::binary | std::ios::trunc);
    f << "garbage";
  }
  EXPECT_THROW(train::generate_text((fs::path(c.train.out_dir) / "checkpoint").string(), {}), Error);
  q.resume = true;
  c.train.steps = 4;
  EXPECT_THROW(train::run_training(c, q), Error);
  // A checkpoint of another config is refused on resume.
  c = tiny(dir, "moe");
  c.train.steps = 2;
  c.train.out_dir = (dir / "run3").string();
  q.resume = false;
  train::run_training(c, q);
  c.model.d_model = 64;
  q.resume = true;
  EXPECT_HMOE_ERROR(train::run_training(c, q), "different config");
  fs::remove_all(dir);
}

// A bf16 model (f32 master weights in the optimizer state): the loss falls, and resume
// is bit-exact because the checkpoint carries the masters.
TEST(Trainer, Bf16ModelTrainsAndResumesExactly) {
  fs::path dir = scratch("bf16");
  train::Config c = tiny(dir, "moe");
  c.model.dtype = DType::bf16;
  c.train.steps = 30;
  c.train.eval_every = 0;
  train::RunOptions q;
  q.quiet = true;
  const auto r = train::run_training(c, q);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i)
    first += r.train_losses[size_t(i)] / 5, last += r.train_losses[r.train_losses.size() - 1 - size_t(i)] / 5;
  EXPECT_LT(last, first - 0.5);
  const auto ev =
      train::evaluate_checkpoint((fs::path(c.train.out_dir) / "checkpoint").string(), c.data.text, "", 0, 2);
  EXPECT_TRUE(std::isfinite(ev.loss));

  c.train.steps = 6;
  c.train.out_dir = (dir / "a").string();
  const auto straight = train::run_training(c, q);
  c.train.out_dir = (dir / "b").string();
  q.stop_at = 3;
  const auto part1 = train::run_training(c, q);
  q.stop_at = -1;
  q.resume = true;
  const auto part2 = train::run_training(c, q);
  ASSERT_EQ(part2.train_losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(part2.train_losses[i], straight.train_losses[3 + i]) << i;
  fs::remove_all(dir);
}

TEST(Trainer, DtypeAndDeviceConfigErrors) {
  EXPECT_HMOE_ERROR(train::load_config("", {"model.dtype=f8"}), "model.dtype");
  EXPECT_HMOE_ERROR(train::load_config("", {"train.device=tpu"}), "train.device");
  EXPECT_EQ(train::load_config("", {"train.device=cuda:1"}).train.device.str(), "cuda:1");
}

// --profile: the profiled steps' trace holds the HyperMoE layer's ops, forward and
// backward, with the pool's memory; profiling changes no result; bad paths are refused.
TEST(Trainer, ProfilesStepsWithoutChangingThem) {
  fs::path dir = scratch("profile");
  train::Config c = tiny(dir, "hypermoe");
  c.train.steps = 4;
  train::RunOptions q;
  q.quiet = true;
  const auto plain = train::run_training(c, q);
  q.overwrite = true;
  q.profile_path = (dir / "trace.json").string();
  q.profile_steps = 2;
  const auto profiled = train::run_training(c, q);
  EXPECT_EQ(profiled.train_losses, plain.train_losses);
  std::ifstream f(q.profile_path);
  const std::string trace((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (const char* op : {"\"traceEvents\"", "\"moe_ffn\"", "\"hyper_expert\"", "grouped_ffn backward",
                         "combine backward", "\"cpu pool MiB\""})
    EXPECT_NE(trace.find(op), std::string::npos) << op;
  q.profile_path = (dir / "no_such_dir" / "trace.json").string();
  EXPECT_HMOE_ERROR(train::run_training(c, q), "no directory");
  q.profile_path = (dir / "trace.json").string();
  q.profile_steps = 0;
  EXPECT_HMOE_ERROR(train::run_training(c, q), "must be > 0");
  fs::remove_all(dir);
}

// A crash between the checkpoint's two renames leaves the last checkpoint whole in
// checkpoint.old: resume puts it back and continues exactly. With no checkpoint at all,
// --resume is an error that leaves the run's metrics as they were.
TEST(Trainer, ResumeRestoresAnInterruptedSaveAndRefusesNothing) {
  fs::path dir = scratch("interrupted");
  train::Config c = tiny(dir, "moe");
  train::RunOptions q;
  q.quiet = true;
  c.train.steps = 4;
  const auto straight = train::run_training(c, q);
  {  // evaluating (at steps 0 and 4 here) changes no step
    train::Config c0 = c;
    c0.train.eval_every = 0;
    c0.train.out_dir = (dir / "run0").string();
    EXPECT_EQ(train::run_training(c0, q).train_losses, straight.train_losses);
  }
  c.train.out_dir = (dir / "run2").string();
  q.stop_at = 2;
  train::run_training(c, q);
  const fs::path ckpt = fs::path(c.train.out_dir) / "checkpoint", old = ckpt.string() + ".old";
  fs::rename(ckpt, old);  // the state a crash between the renames leaves
  EXPECT_HMOE_ERROR(train::generate_text(ckpt.string(), {}), "interrupted save");
  const fs::path metrics = fs::path(c.train.out_dir) / "metrics.jsonl";
  auto read = [](const fs::path& p) {
    std::ifstream f(p);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  const std::string logged = read(metrics);
  EXPECT_EQ(logged.rfind("{\"step\": 0, \"val_loss\"", 0), 0u) << logged;  // where the run started from
  std::ofstream(metrics, std::ios::app) << "{\"step\": 3, \"lm_loss\": 1}\n{\"step\": 4, \"lm";  // logged, not saved
  EXPECT_NE(read(metrics), logged);
  q.stop_at = -1;
  q.resume = true;
  const auto rest = train::run_training(c, q);
  ASSERT_EQ(rest.train_losses.size(), 2u);
  EXPECT_EQ(rest.train_losses[0], straight.train_losses[2]);
  EXPECT_EQ(rest.train_losses[1], straight.train_losses[3]);
  EXPECT_TRUE(fs::exists(ckpt / "state.safetensors"));
  EXPECT_FALSE(fs::exists(old));
  // The metrics: those of the first run's steps, then the resumed steps', once each.
  const std::string all = read(metrics);
  EXPECT_EQ(all.substr(0, logged.size()), logged);
  for (int i = 1; i <= 4; ++i) {
    const std::string step = "{\"step\": " + std::to_string(i) + ", \"lm_loss\"";
    const size_t at = all.find(step);
    EXPECT_NE(at, std::string::npos) << step;
    EXPECT_EQ(all.find(step, at + 1), std::string::npos) << step;
  }

  fs::remove_all(ckpt);
  const std::string before = read(metrics);
  ASSERT_FALSE(before.empty());
  EXPECT_HMOE_ERROR(train::run_training(c, q), "no checkpoint to continue");
  EXPECT_EQ(read(metrics), before);
  fs::remove_all(dir);
}

// The counts `hmoe presets` prints come from the config alone; they must be the built
// models' counts for every FFN kind and the settings that change the shapes.
TEST(Trainer, ParameterCountsMatchBuiltModels) {
  const fs::path dir = scratch("counts");
  for (std::string ffn : {"dense", "moe", "hypermoe"})
    for (const char* router : {"topk", "switch"})
      for (int64_t every : {1, 2})
        for (bool noisy : {true, false}) {
          train::Config c = tiny(dir, ffn);
          c.model.router = model::parse_router_kind(router);
          c.model.top_k = c.model.router == model::RouterKind::switch_ ? 1 : 2;
          c.model.moe_every = every;
          c.model.noisy = noisy;
          c.model.n_layer = 3;
          c.model.vocab_size = 256;
          SCOPED_TRACE(ffn + " " + router + " every " + std::to_string(every) + (noisy ? " noisy" : ""));
          EXPECT_EQ(model::count_parameters(c.model), model::LanguageModel(c.model, 0).num_parameters());
        }
  // The shipped tiny preset (the README's main job), at its documented size.
  model::ModelConfig m = train::load_config("", {"model.ffn=hypermoe", "model.adapter_rank=16"}).model;
  m.vocab_size = 256;
  EXPECT_EQ(model::count_parameters(m), 5239608);
  EXPECT_EQ(model::count_parameters(m), model::LanguageModel(m, 0).num_parameters());
  fs::remove_all(dir);
}
