// The trainer: the loss falls on a learnable stream, resume is bit-exact, and bad
// configs or checkpoints give clear errors without damaging what was written.
#include <filesystem>
#include <fstream>

#include "models/train/trainer.h"
#include "tests/test_util.h"

using namespace hmoe;
namespace fs = std::filesystem;

namespace {
fs::path scratch(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("hmoe_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A small text with structure to learn.
fs::path write_corpus(const fs::path& dir) {
  std::ofstream f(dir / "corpus.txt");
  for (int i = 0; i < 400; ++i) f << "the quick brown fox jumps over the lazy dog " << (i % 7) << "\n";
  return dir / "corpus.txt";
}

train::Config tiny(const fs::path& dir, const std::string& ffn) {
  train::Config c = train::load_config("", {});
  c.model.ffn = ffn;
  c.model.n_layer = 2;
  c.model.d_model = 32;
  c.model.n_head = 2;
  c.model.d_ff = 64;
  c.model.block_size = 16;
  c.model.n_experts = 4;
  c.model.top_k = 2;
  c.model.expert_emb_dim = 8;
  c.model.selection_hidden = 8;
  c.model.hyper_in = 8;
  c.model.hyper_hidden = 8;
  c.model.adapter_rank = 4;
  c.data.text = {write_corpus(dir).string()};
  c.data.val_fraction = 0.1;
  c.train.batch_size = 4;
  c.train.steps = 8;
  c.train.warmup = 2;
  c.train.eval_every = 4;
  c.train.eval_batches = 2;
  c.train.lr = 3e-3;
  c.train.out_dir = (dir / "run").string();
  return c;
}
}  // namespace

TEST(Trainer, ResumeIsBitExact) {
  fs::path dir = scratch("resume");
  train::Config c = tiny(dir, "hypermoe");
  train::RunOptions q;
  q.quiet = true;
  c.train.steps = 8;
  c.train.grad_accum = 2;
  const auto straight = train::run_training(c, q);
  ASSERT_EQ(straight.train_losses.size(), 8u);

  c.train.out_dir = (dir / "run2").string();
  q.stop_at = 4;
  const auto first = train::run_training(c, q);
  q.stop_at = -1;
  q.resume = true;
  const auto second = train::run_training(c, q);
  ASSERT_EQ(first.train_losses.size() + second.train_losses.size(), 8u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(first.train_losses[i], straight.train_losses[i]) << i;
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(second.train_losses[i], straight.train_losses[4 + i]) << i;
  EXPECT_EQ(second.last_val_loss, straight.last_val_loss);
  fs::remove_all(dir);
}

TEST(Trainer, LossFallsForEachFfnKind) {
  fs::path dir = scratch("falls");
  for (std::string ffn : {"dense", "moe", "hypermoe"}) {
    train::Config c = tiny(dir, ffn);
    c.train.steps = 30;
    c.train.eval_every = 0;
    train::RunOptions q;
    q.quiet = true;
    const auto r = train::run_training(c, q);
    double first = 0, last = 0;
    for (int i = 0; i < 5; ++i) first += r.train_losses[size_t(i)] / 5, last += r.train_losses[r.train_losses.size() - 1 - size_t(i)] / 5;
    EXPECT_LT(last, first - 0.5) << ffn;
    EXPECT_TRUE(fs::exists(fs::path(c.train.out_dir) / "checkpoint" / "model.safetensors"));
    // Evaluate and sample from the checkpoint.
    const auto ev = train::evaluate_checkpoint((fs::path(c.train.out_dir) / "checkpoint").string(),
                                               c.data.text, "", 0, 4);
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
  {
    std::ofstream f(dir / "c.toml");
    f << "[model\n";
  }
  EXPECT_HMOE_ERROR(train::load_config((dir / "c.toml").string(), {}), "not valid TOML");
  const auto ok = train::load_config("", {"model.preset=small", "train.steps=5"});
  EXPECT_EQ(ok.model.d_model, 256);
  EXPECT_EQ(ok.train.steps, 5);

  // Empty data.
  train::Config c = tiny(dir, "moe");
  { std::ofstream f(dir / "empty.txt"); }
  c.data.text = {(dir / "empty.txt").string()};
  train::RunOptions q;
  q.quiet = true;
  EXPECT_HMOE_ERROR(train::run_training(c, q), "empty");
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
