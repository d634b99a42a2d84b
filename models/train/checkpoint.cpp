// Checkpoint files: atomic saves through a fresh directory and two renames, and loads
// that name the file and the key that does not fit.
#include "models/train/checkpoint.h"

#include <algorithm>
#include <map>

#include "engine/error.h"
#include "engine/io/file.h"
#include "engine/io/safetensors.h"

namespace hmoe::train {

namespace fs = std::filesystem;

namespace {

fs::path old_dir(const fs::path& dir) { return dir.string() + ".old"; }

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

}  // namespace

void place_model(model::LanguageModel& m, const Config& c) {
  if (c.model.dtype != DType::f32) m.to(c.model.dtype);
  m.to(c.train.device.device);
}

void save_checkpoint(const fs::path& dir, const Config& cfg, const model::LanguageModel& m, const ParamGroups& groups,
                     const TrainState& st) {
  // Write into a fresh directory, then swap it in. A crash at any point leaves one whole
  // checkpoint: the previous in `dir`, or in `<dir>.old` between the two renames (resume
  // puts it back), or the new one.
  const fs::path tmp = dir.string() + ".tmp", old = old_dir(dir);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::map<std::string, std::string> meta{{"config", config_to_json(cfg)}, {"format", "hmoe-checkpoint-1"}};
  io::save_safetensors(model_file(tmp).string(), m.named_parameters(), meta);
  std::vector<std::pair<std::string, Tensor>> state;
  std::map<std::string, std::string> smeta{{"step", std::to_string(st.step)},
                                           {"sampler_position", std::to_string(st.sampler_position)},
                                           {"noise_offset", std::to_string(st.noise_offset)},
                                           {"config", config_to_json(cfg)}};
  for (const ParamGroup& g : groups.groups()) {
    for (auto& [n, t] : g.opt->state_tensors()) state.emplace_back(g.name + "." + n, t);
    smeta[g.name + "_steps"] = std::to_string(g.opt->step_count());
  }
  io::save_safetensors(state_file(tmp).string(), state, smeta);
  if (fs::exists(dir)) {
    fs::remove_all(old);
    fs::rename(dir, old);
  }
  fs::rename(tmp, dir);
  io::fsync_directory(fs::absolute(dir).parent_path().string());
  fs::remove_all(old);
}

bool restore_interrupted_save(const fs::path& dir) {
  const fs::path old = old_dir(dir);
  if (fs::exists(dir) || !fs::exists(model_file(old)) || !fs::exists(state_file(old))) return false;
  fs::rename(old, dir);
  io::fsync_directory(fs::absolute(dir).parent_path().string());
  return true;
}

Config checkpoint_config(const fs::path& dir) {
  const fs::path f = model_file(dir);
  const fs::path old = old_dir(dir);
  HMOE_CHECK(fs::exists(f), "checkpoint: '", f.string(), "' does not exist",
             fs::exists(model_file(old)) ? " (an interrupted save left the last checkpoint in '" + old.string() +
                                               "'; `hmoe train --resume` puts it back)"
                                         : std::string());
  io::SafeTensors st = io::load_safetensors(f.string());
  auto it = st.metadata.find("config");
  HMOE_CHECK(it != st.metadata.end(), "checkpoint: '", f.string(), "' has no config in its metadata");
  return parse_config_json(it->second);
}

void load_weights(nn::Module& m, const fs::path& dir) {
  io::SafeTensors st = io::load_safetensors(model_file(dir).string());
  m.load_state_dict(st.tensors, /*strict=*/true);
}

TrainState load_train_state(const fs::path& dir, ParamGroups& groups) {
  const std::string sf = state_file(dir).string();
  io::SafeTensors s = io::load_safetensors(sf);
  std::map<std::string, std::vector<std::pair<std::string, Tensor>>> by_group;
  for (auto& [n, t] : s.tensors) {
    const size_t dot = n.find('.');
    const std::string group = dot == std::string::npos ? n : n.substr(0, dot);
    const bool known = std::any_of(groups.groups().begin(), groups.groups().end(),
                                   [&](const ParamGroup& g) { return g.name == group; });
    HMOE_CHECK(known, "resume: unexpected tensor '", n, "' in the training state");
    by_group[group].emplace_back(n.substr(dot + 1), t);
  }
  for (ParamGroup& g : groups.groups()) {
    try {
      g.opt->load_state(by_group[g.name], int64_t(meta_u64(s.metadata, g.name + "_steps", sf)));
    } catch (const Error& e) {
      HMOE_FAIL("resume: the training state '", sf, "' does not fit this model's parameter group '", g.name,
                "': ", e.what());
    }
  }
  return {int64_t(meta_u64(s.metadata, "step", sf)), meta_u64(s.metadata, "sampler_position", sf),
          meta_u64(s.metadata, "noise_offset", sf)};
}

}  // namespace hmoe::train
