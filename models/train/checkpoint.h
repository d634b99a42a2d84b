// A checkpoint directory: model.safetensors (the weights, the config in their metadata)
// and state.safetensors (each optimiser group's state and step count, and where the step
// loop stands), saved atomically; and reading them back into a model.
#pragma once

#include <cstdint>
#include <filesystem>

#include "models/hypermoe/lm.h"
#include "models/train/config.h"
#include "models/train/param_groups.h"

namespace hmoe::train {

// Where the step loop stands: steps done, the window sampler's position and the noise
// generator's offset (router noise and dropout).
struct TrainState {
  int64_t step = 0;
  uint64_t sampler_position = 0;
  uint64_t noise_offset = 0;
};

// The checkpoint's two files.
inline std::filesystem::path model_file(const std::filesystem::path& dir) { return dir / "model.safetensors"; }
inline std::filesystem::path state_file(const std::filesystem::path& dir) { return dir / "state.safetensors"; }

// Puts a model built from `c` (in f32 on the CPU, so every device and precision starts
// from the same weights, rounded) in the config's precision on the config's device.
void place_model(model::LanguageModel& m, const Config& c);

// Writes a new checkpoint into `dir`, replacing the one there. A crash at any point leaves
// one whole checkpoint (see restore_interrupted_save).
void save_checkpoint(const std::filesystem::path& dir, const Config& cfg, const model::LanguageModel& m,
                     const ParamGroups& groups, const TrainState& st);
// A save interrupted between its two renames leaves no `dir` and the last checkpoint
// whole in `<dir>.old`: puts it back. True if it did.
bool restore_interrupted_save(const std::filesystem::path& dir);

// The config the checkpoint was written with.
Config checkpoint_config(const std::filesystem::path& dir);
// The checkpoint's weights into `m` (every name and shape must match).
void load_weights(nn::Module& m, const std::filesystem::path& dir);
// The optimiser state into `groups` (which must be those of the saved run); returns
// where the loop stood.
TrainState load_train_state(const std::filesystem::path& dir, ParamGroups& groups);

}  // namespace hmoe::train
