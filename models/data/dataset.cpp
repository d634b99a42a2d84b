// Token datasets (text bytes or token files), splitting, and window sampling.
#include "models/data/dataset.h"

#include <algorithm>
#include <filesystem>

#include "engine/io/file.h"
#include "engine/rng.h"
#include "ops/factory.h"

namespace hmoe::data {

namespace fs = std::filesystem;

TokenDataset::TokenDataset(std::vector<uint32_t> tokens, int64_t vocab_size)
    : tokens_(std::move(tokens)), vocab_size_(vocab_size) {
  HMOE_CHECK(vocab_size_ >= 1, "dataset: the vocabulary must hold at least one token, got ", vocab_size_);
  for (size_t i = 0; i < tokens_.size(); ++i)
    HMOE_CHECK(int64_t(tokens_[i]) < vocab_size_, "dataset: token ", tokens_[i], " (at position ", i,
               ") is outside the vocabulary of ", vocab_size_);
}

TokenDataset TokenDataset::from_text_files(const std::vector<std::string>& paths, int64_t vocab_size) {
  HMOE_CHECK(!paths.empty(), "dataset: no text files given");
  HMOE_CHECK(vocab_size >= 1, "dataset: the vocabulary must hold at least one token, got ", vocab_size);
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    HMOE_CHECK(fs::exists(p), "dataset: '", p, "' does not exist");
    if (fs::is_directory(p)) {
      std::vector<std::string> inner;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file()) inner.push_back(e.path().string());
      HMOE_CHECK(!inner.empty(), "dataset: the directory '", p, "' holds no files");
      std::sort(inner.begin(), inner.end());
      files.insert(files.end(), inner.begin(), inner.end());
    } else {
      files.push_back(p);
    }
  }
  std::vector<uint32_t> tokens;
  for (const std::string& f : files) {
    const std::vector<uint8_t> bytes = io::read_file(f, "dataset");
    for (size_t i = 0; i < bytes.size(); ++i)
      HMOE_CHECK(int64_t(bytes[i]) < vocab_size, "dataset: '", f, "' holds byte ", int(bytes[i]), " at offset ", i,
                 ", outside model.vocab_size = ", vocab_size);
    tokens.insert(tokens.end(), bytes.begin(), bytes.end());
  }
  HMOE_CHECK(!tokens.empty(), "dataset: the text files are empty (", files.size(), " file(s), 0 bytes)");
  return TokenDataset(std::move(tokens), vocab_size);
}

TokenDataset TokenDataset::from_token_file(const std::string& path, int width, int64_t vocab_size) {
  HMOE_CHECK(width == 2 || width == 4, "dataset: token width must be 2 (uint16) or 4 (uint32), got ", width);
  HMOE_CHECK(vocab_size >= 0, "dataset: the vocabulary size must be >= 0 (0: from the data), got ", vocab_size);
  const std::vector<uint8_t> s = io::read_file(path, "dataset");
  HMOE_CHECK(s.size() % size_t(width) == 0, "dataset: '", path, "' has ", s.size(),
             " bytes, not a whole number of ", width, "-byte tokens");
  HMOE_CHECK(!s.empty(), "dataset: '", path, "' is empty");
  std::vector<uint32_t> tokens(s.size() / size_t(width));
  uint32_t mx = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    uint32_t v = 0;
    for (int j = width - 1; j >= 0; --j) v = (v << 8) | s[i * size_t(width) + size_t(j)];
    HMOE_CHECK(vocab_size == 0 || int64_t(v) < vocab_size, "dataset: '", path, "' holds token ", v, " at byte offset ",
               i * size_t(width), ", outside model.vocab_size = ", vocab_size);
    tokens[i] = v;
    mx = std::max(mx, v);
  }
  if (vocab_size == 0) vocab_size = int64_t(mx) + 1;
  return TokenDataset(std::move(tokens), vocab_size);
}

std::pair<TokenDataset, TokenDataset> TokenDataset::split(double val_fraction, int64_t min_tokens) const {
  HMOE_CHECK(val_fraction > 0 && val_fraction < 1, "dataset: validation fraction must be in (0, 1), got ",
             val_fraction);
  const int64_t n_val = std::max<int64_t>(min_tokens, int64_t(double(size()) * val_fraction));
  HMOE_CHECK(size() - n_val >= min_tokens, "dataset: ", size(), " tokens are too few to split into train and ",
             "validation windows of ", min_tokens, " tokens");
  std::vector<uint32_t> tr(tokens_.begin(), tokens_.end() - n_val), va(tokens_.end() - n_val, tokens_.end());
  return {TokenDataset(std::move(tr), vocab_size_), TokenDataset(std::move(va), vocab_size_)};
}

WindowSampler::WindowSampler(const TokenDataset& data, int64_t block_size, uint64_t seed)
    : data_(&data), block_(block_size), seed_(seed) {
  HMOE_CHECK(block_size > 0, "sampler: block size must be positive");
  HMOE_CHECK(data.size() > block_size, "sampler: ", data.size(), " tokens are too few for windows of ",
             block_size + 1);
}

Batch WindowSampler::next(int64_t batch_size) {
  HMOE_CHECK(batch_size > 0, "sampler: batch size must be positive");
  checked_mul(batch_size, block_, "sampler: batch_size x block_size");  // before sizing a buffer by it
  Tensor in = Tensor::empty({batch_size, block_}, {DType::i64});
  Tensor tg = Tensor::empty({batch_size, block_}, {DType::i64});
  int64_t* pi = in.data_ptr<int64_t>();
  int64_t* pt = tg.data_ptr<int64_t>();
  const uint64_t span = uint64_t(data_->size() - block_);  // start in [0, size - block - 1]
  const auto& tok = data_->tokens();
  for (int64_t b = 0; b < batch_size; ++b) {
    const Philox4 r = philox4x32_10(position_++, uint64_t(RngStream::uniform), seed_);
    const uint64_t start = ((uint64_t(r.v[0]) << 32) | r.v[1]) % span;
    for (int64_t t = 0; t < block_; ++t) {
      pi[b * block_ + t] = tok[size_t(start + uint64_t(t))];
      pt[b * block_ + t] = tok[size_t(start + uint64_t(t) + 1)];
    }
  }
  return {in, tg};
}

std::vector<Batch> sequential_batches(const TokenDataset& data, int64_t block, int64_t batch_size,
                                      int64_t max_batches) {
  HMOE_CHECK(data.size() > block, "eval: ", data.size(), " tokens are too few for windows of ", block + 1);
  checked_mul(batch_size, block, "eval: batch_size x block_size");
  std::vector<int64_t> starts;
  for (int64_t s = 0; s + block < data.size(); s += block) starts.push_back(s);
  std::vector<Batch> out;
  const auto& tok = data.tokens();
  for (size_t i = 0; i < starts.size() && int64_t(out.size()) < max_batches; i += size_t(batch_size)) {
    const int64_t b = std::min<int64_t>(batch_size, int64_t(starts.size() - i));
    Tensor in = Tensor::empty({b, block}, {DType::i64}), tg = Tensor::empty({b, block}, {DType::i64});
    for (int64_t j = 0; j < b; ++j)
      for (int64_t t = 0; t < block; ++t) {
        in.data_ptr<int64_t>()[j * block + t] = tok[size_t(starts[i + size_t(j)] + t)];
        tg.data_ptr<int64_t>()[j * block + t] = tok[size_t(starts[i + size_t(j)] + t + 1)];
      }
    out.push_back({in, tg});
  }
  return out;
}

std::vector<std::string> default_corpus_files() {
  const fs::path dir = "/usr/share/games/fortunes";
  std::vector<std::string> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && ext != ".dat" && ext != ".u8" && !e.is_symlink()) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace hmoe::data
