// Shared by the trainer tests (CPU and cuda device): a scratch directory, a small
// structured corpus, and a tiny config of each FFN kind that trains in seconds.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "models/train/trainer.h"

namespace hmoe::testing {

inline std::filesystem::path scratch(const std::string& name) {
  std::filesystem::path p =
      std::filesystem::temp_directory_path() / ("hmoe_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// A small text with structure to learn.
inline std::filesystem::path write_corpus(const std::filesystem::path& dir) {
  std::ofstream f(dir / "corpus.txt");
  for (int i = 0; i < 400; ++i) f << "the quick brown fox jumps over the lazy dog " << (i % 7) << "\n";
  return dir / "corpus.txt";
}

inline train::Config tiny(const std::filesystem::path& dir, const std::string& ffn) {
  train::Config c = train::load_config("", {});
  c.model.ffn = model::parse_ffn_kind(ffn);
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

}  // namespace hmoe::testing
