// Checkpoint files: atomic saves through a fresh directory and two renames under an
// exclusive lock, finite values only; reads under a shared lock that name the file and
// the key that does not fit.
#include "models/train/checkpoint.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "engine/error.h"
#include "engine/io/file.h"
#include "engine/io/json.h"
#include "models/optim/optimizer.h"
#include "models/train/memory.h"

namespace hmoe::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "hmoe-checkpoint-2";

// "runs/x/checkpoint/" and "runs/x/./checkpoint" name the same directory as
// "runs/x/checkpoint": the sibling paths (.old, .tmp, .lock) hang off the last one.
fs::path clean_dir(const fs::path& dir) {
  fs::path p = dir.lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return p;
}

fs::path old_dir(const fs::path& dir) { return dir.string() + ".old"; }

// A metadata value that must be a decimal integer in [0, max]: digits only (no sign, no
// spaces), so "-1" is refused instead of wrapping.
uint64_t meta_uint(const std::map<std::string, std::string>& m, const std::string& key, const std::string& file,
                   uint64_t max = std::numeric_limits<uint64_t>::max()) {
  auto it = m.find(key);
  HMOE_CHECK(it != m.end(), "checkpoint: '", file, "' lacks metadata '", key, "'");
  const std::string& s = it->second;
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  HMOE_CHECK(!s.empty() && ec == std::errc() && end == s.data() + s.size() && v <= max, "checkpoint: metadata '", key,
             "' in '", file, "' must be an integer in [0, ", max, "], got ", io::json_brief(nlohmann::json(s)));
  return v;
}

int64_t meta_step(const std::map<std::string, std::string>& m, const std::string& key, const std::string& file) {
  return int64_t(meta_uint(m, key, file, uint64_t(std::numeric_limits<int64_t>::max())));
}

// The first tensor holding a value that is not finite, or none: one sum of squares for
// the lot (optim::sum_of_squares), tensor by tensor only when it is not finite.
std::optional<std::string> first_nonfinite(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::vector<Tensor> floats;
  for (const auto& [name, t] : tensors)
    if (is_floating(t.dtype())) floats.push_back(t);
  if (std::isfinite(optim::sum_of_squares(floats))) return std::nullopt;
  for (const auto& [name, t] : tensors)
    if (is_floating(t.dtype()) && !std::isfinite(optim::sum_of_squares({t}))) return name;
  return "?";
}

std::vector<std::pair<std::string, Tensor>> as_list(const std::map<std::string, Tensor>& m) {
  return {m.begin(), m.end()};
}

// The model file must exist; when an interrupted save left the last checkpoint aside,
// the error says where and how to put it back.
void require_model_file(const fs::path& dir) {
  const fs::path f = model_file(dir), old = old_dir(dir);
  HMOE_CHECK(fs::exists(f), "checkpoint: '", f.string(), "' does not exist",
             fs::exists(model_file(old)) ? " (an interrupted save left the last checkpoint in '" + old.string() +
                                               "'; `hmoe train --resume` puts it back)"
                                         : std::string());
}

// Parses a file image read from `path`, naming the file in errors.
template <typename F>
auto parsing(const std::string& path, F parse) {
  try {
    return parse();
  } catch (const Error& e) {
    HMOE_FAIL(e.what(), " (in '", path, "')");
  }
}

Config config_of(const std::map<std::string, std::string>& meta, const std::string& file) {
  auto it = meta.find("config");
  HMOE_CHECK(it != meta.end(), "checkpoint: '", file, "' has no config in its metadata");
  return parsing(file, [&] { return parse_config_json(it->second); });
}

// Reads files of the checkpoint under its shared lock (none when no trainer ever saved
// beside it, say a copied checkpoint).
std::vector<std::vector<uint8_t>> read_locked(const fs::path& dir, const std::vector<fs::path>& files) {
  io::FileLock lock(checkpoint_lock_file(dir).string(), io::FileLock::Mode::shared, /*wait=*/true,
                    /*create=*/false, "checkpoint");
  require_model_file(dir);
  std::vector<std::vector<uint8_t>> out;
  for (const fs::path& f : files) out.push_back(io::read_file(f.string(), "checkpoint"));
  return out;
}

void check_finite_weights(const io::SafeTensors& st, const std::string& file) {
  const std::optional<std::string> bad = first_nonfinite(as_list(st.tensors));
  HMOE_CHECK(!bad, "checkpoint: tensor '", bad.value_or(""), "' in '", file, "' holds values that are not finite");
}

}  // namespace

fs::path checkpoint_lock_file(const fs::path& dir) { return clean_dir(dir).string() + ".lock"; }

void place_model(model::LanguageModel& m, const Config& c) {
  if (c.model.dtype != DType::f32) m.to(c.model.dtype);
  m.to(c.train.device.device);
}

CheckpointContent checkpoint_content(const model::LanguageModel& m, const optim::Optimizer& opt) {
  const nn::Parallel& par = m.parallel();
  const std::map<std::string, nn::RowShard> shards = m.parameter_shards();
  CheckpointContent c;
  c.weights = nn::gather_shards(m.named_parameters(), shards, par);
  // Optimiser state shards like its parameter.
  std::map<std::string, nn::RowShard> state_shards;
  const std::vector<std::pair<std::string, Tensor>> state = opt.state_tensors();
  for (const auto& [key, t] : state) {
    const auto sh = shards.find(opt.parameter_of(key));
    if (sh != shards.end()) state_shards.emplace(key, sh->second);
  }
  c.state = nn::gather_shards(state, state_shards, par);
  // One step count, written per group (the file's format from when each group had its own).
  for (const optim::ParamGroup& g : opt.param_groups()) c.group_steps[g.name] = opt.step_count();
  return c;
}

void save_checkpoint(const fs::path& dir_in, const Config& cfg, const CheckpointContent& content,
                     const TrainState& st) {
  const fs::path dir = clean_dir(dir_in);
  const std::vector<std::pair<std::string, Tensor>>& weights = content.weights;
  const std::vector<std::pair<std::string, Tensor>>& state = content.state;
  std::map<std::string, std::string> smeta{{"step", std::to_string(st.step)},
                                           {"sampler_position", std::to_string(st.sampler_position)},
                                           {"noise_offset", std::to_string(st.noise_offset)},
                                           {"config", config_to_json(cfg)},
                                           {"format", kFormat},
                                           // The weights this state belongs with.
                                           {"model_step", std::to_string(st.step)},
                                           {"model_digest", io::safetensors_digest(weights)}};
  for (const auto& [group, steps] : content.group_steps) smeta[group + "_steps"] = std::to_string(steps);
  auto check_finite = [&](const std::vector<std::pair<std::string, Tensor>>& part, const char* kind) {
    const std::optional<std::string> bad = first_nonfinite(part);
    HMOE_CHECK(!bad, "checkpoint: not saved at step ", st.step, ": ", kind, " '", bad.value_or(""),
               "' holds values that are not finite (the last checkpoint in '", dir.string(), "' is kept)");
  };
  check_finite(weights, "weight");
  check_finite(state, "optimizer state");
  // Write into a fresh directory, then swap it in. A crash at any point leaves one whole
  // checkpoint: the previous in `dir`, or in `<dir>.old` between the two renames (resume
  // puts it back), or the new one. Readers wait on the lock while the swap is made.
  const fs::path tmp = dir.string() + ".tmp", old = old_dir(dir);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::map<std::string, std::string> meta{
      {"config", config_to_json(cfg)}, {"format", kFormat}, {"step", std::to_string(st.step)}};
  io::save_safetensors(model_file(tmp).string(), weights, meta);
  io::save_safetensors(state_file(tmp).string(), state, smeta);
  io::FileLock lock(checkpoint_lock_file(dir).string(), io::FileLock::Mode::exclusive, /*wait=*/true,
                    /*create=*/true, "checkpoint");
  if (fs::exists(dir)) {
    fs::remove_all(old);
    fs::rename(dir, old);
  }
  fs::rename(tmp, dir);
  io::fsync_directory(fs::absolute(dir).parent_path().string());
  fs::remove_all(old);
}

bool restore_interrupted_save(const fs::path& dir_in) {
  const fs::path dir = clean_dir(dir_in), old = old_dir(dir);
  io::FileLock lock(checkpoint_lock_file(dir).string(), io::FileLock::Mode::exclusive, /*wait=*/true,
                    /*create=*/true, "checkpoint");
  if (fs::exists(dir) || !fs::exists(model_file(old)) || !fs::exists(state_file(old))) return false;
  fs::rename(old, dir);
  io::fsync_directory(fs::absolute(dir).parent_path().string());
  return true;
}

CheckpointModel load_checkpoint_model(const fs::path& dir_in, int64_t batch, const std::string& what) {
  const fs::path dir = clean_dir(dir_in);
  const std::string path = model_file(dir).string();
  std::vector<uint8_t> bytes = std::move(read_locked(dir, {model_file(dir)})[0]);
  CheckpointModel out;
  out.config =
      config_of(parsing(path, [&] { return io::parse_safetensors_metadata(bytes.data(), bytes.size()); }), path);
  check_memory(estimate_inference_memory(out.config.model, batch > 0 ? batch : out.config.train.batch_size),
               out.config.train.device.device, what);
  const io::SafeTensors st = parsing(path, [&] { return io::parse_safetensors(bytes.data(), bytes.size()); });
  bytes = {};
  check_finite_weights(st, path);
  out.model = std::make_unique<model::LanguageModel>(out.config.model, 0);
  place_model(*out.model, out.config);
  out.model->load_state_dict(st.tensors, /*strict=*/true);
  return out;
}

CheckpointFiles read_checkpoint(const fs::path& dir_in) {
  const fs::path dir = clean_dir(dir_in);
  CheckpointFiles f;
  f.weights_path = model_file(dir).string();
  f.state_path = state_file(dir).string();
  const auto bytes = read_locked(dir, {model_file(dir), state_file(dir)});
  f.weights = parsing(f.weights_path, [&] { return io::parse_safetensors(bytes[0].data(), bytes[0].size()); });
  f.state = parsing(f.state_path, [&] { return io::parse_safetensors(bytes[1].data(), bytes[1].size()); });
  f.config = config_of(f.weights.metadata, f.weights_path);
  const auto& sm = f.state.metadata;
  HMOE_CHECK(sm.count("model_digest") && sm.count("model_step"), "checkpoint: '", f.state_path,
             "' does not record which weights it belongs with (written by an older hmoe?), so it cannot be checked ",
             "against '", f.weights_path, "'");
  const int64_t step = meta_step(sm, "step", f.state_path), model_step = meta_step(sm, "model_step", f.state_path);
  const int64_t weights_step = meta_step(f.weights.metadata, "step", f.weights_path);
  HMOE_CHECK(sm.at("model_digest") == f.weights.digest && model_step == weights_step && step == model_step,
             "checkpoint: '", f.state_path, "' (step ", step, ") belongs with the weights of step ", model_step,
             " (digest ", io::json_brief(nlohmann::json(sm.at("model_digest"))), "), but '", f.weights_path,
             "' holds the weights of step ", weights_step, " (digest ", f.weights.digest,
             "): the two files come from different saves");
  return f;
}

void load_weights(model::LanguageModel& m, const CheckpointFiles& files) {
  check_finite_weights(files.weights, files.weights_path);
  m.load_state_dict(nn::slice_shards(files.weights.tensors, m.parameter_shards()), /*strict=*/true);
}

TrainState read_train_state(const io::SafeTensors& s, const model::LanguageModel& m, optim::Optimizer& opt,
                            const std::string& sf) {
  TrainState st{meta_step(s.metadata, "step", sf), meta_uint(s.metadata, "sampler_position", sf),
                meta_uint(s.metadata, "noise_offset", sf)};
  check_finite_weights(s, sf);
  // This process's rows of the experts' state (the file holds every expert's).
  const std::map<std::string, nn::RowShard> shards = m.parameter_shards();
  std::map<std::string, nn::RowShard> state_shards;
  for (const auto& [key, t] : s.tensors) {
    HMOE_CHECK(!opt.parameter_of(key).empty(), "resume: unexpected tensor '", io::json_brief(nlohmann::json(key)),
               "' in the training state '", sf, "'");
    const auto sh = shards.find(opt.parameter_of(key));
    if (sh != shards.end()) state_shards.emplace(key, sh->second);
  }
  const std::vector<optim::ParamGroup>& groups = opt.param_groups();
  const int64_t steps = groups.empty() ? 0 : meta_step(s.metadata, groups[0].name + "_steps", sf);
  for (const optim::ParamGroup& g : groups)
    HMOE_CHECK(meta_step(s.metadata, g.name + "_steps", sf) == steps, "resume: the training state '", sf,
               "' records different step counts for the optimizer groups '", groups[0].name, "' and '", g.name, "'");
  const std::map<std::string, Tensor> mine = nn::slice_shards(s.tensors, state_shards);
  try {
    opt.load_state({mine.begin(), mine.end()}, steps);
  } catch (const Error& e) {
    HMOE_FAIL("resume: the training state '", sf, "': ", e.what());
  }
  return st;
}

}  // namespace hmoe::train
