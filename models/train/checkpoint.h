/// @file
/// A checkpoint directory: model.safetensors (the weights; the config and the step in their
/// metadata) and state.safetensors (each optimiser group's state and step count, where the
/// step loop stands, and the step and digest of the weights it belongs with), saved
/// atomically under a lock; and reading them back: the model alone (eval, generate) or
/// both files, checked to belong together (resume).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/io/safetensors.h"
#include "models/hypermoe/lm.h"
#include "models/optim/optimizer.h"
#include "models/train/config.h"

namespace hmoe::train {

/// Where the step loop stands: steps done, the window sampler's position and the noise
/// generator's offset (router noise and dropout).
struct TrainState {
  int64_t step = 0;               ///< steps done
  uint64_t sampler_position = 0;  ///< the window sampler's position
  uint64_t noise_offset = 0;      ///< the noise generator's offset
};

/// @{
/// The checkpoint's two files: the weights and the state.
inline std::filesystem::path model_file(const std::filesystem::path& dir) { return dir / "model.safetensors"; }
inline std::filesystem::path state_file(const std::filesystem::path& dir) { return dir / "state.safetensors"; }
/// @}
/// The lock file beside the directory (`<dir>.lock`): a save holds it exclusively, a reader
/// shared, so no reader sees the directory between a save's two renames.
std::filesystem::path checkpoint_lock_file(const std::filesystem::path& dir);

/// Puts a model built from `c` (in f32 on the CPU, so every device and precision starts
/// from the same weights, rounded) in the config's precision on the config's device.
void place_model(model::LanguageModel& m, const Config& c);

/// What a checkpoint holds as named tensors: the whole model's weights, its optimiser
/// state ("<group>.<parameter>.<what>") and each group's step count.
struct CheckpointContent {
  /// @{
  /// The whole model's weights; the optimiser's state.
  std::vector<std::pair<std::string, Tensor>> weights, state;
  /// @}
  std::map<std::string, int64_t> group_steps;  ///< each optimiser group's step count
};
/// The content of a model and its optimiser groups. A model whose experts are shared by
/// several ranks (m.parallel()) has its shards, and their optimiser state, gathered by
/// global expert id into the tensors one process holds, so the files are the same on any
/// number of processes: collective over the expert-parallel group (every rank calls it).
CheckpointContent checkpoint_content(const model::LanguageModel& m, const optim::Optimizer& opt);

/// Writes a new checkpoint into `dir`, replacing the one there. A crash at any point leaves
/// one whole checkpoint (see restore_interrupted_save). Weights or optimiser state that
/// are not finite are refused (hmoe::Error naming the tensor), the last checkpoint kept.
void save_checkpoint(const std::filesystem::path& dir, const Config& cfg, const CheckpointContent& content,
                     const TrainState& st);
/// A save interrupted between its two renames leaves no `dir` and the last checkpoint
/// whole in `<dir>.old`: puts it back. True if it did.
bool restore_interrupted_save(const std::filesystem::path& dir);

/// A checkpoint's model and the config it was trained with.
struct CheckpointModel {
  Config config;                                ///< from the weights' metadata
  std::unique_ptr<model::LanguageModel> model;  ///< built, loaded and placed (place_model)
};
/// The checkpoint's model, to evaluate or sample: the config is read from the weights'
/// file before any tensor is allocated and the memory checked (check_memory, for `batch`
/// sequences; 0: the config's train.batch_size), then the model built and loaded, all from
/// one read of the file made under the checkpoint's lock. Weights that are not finite are
/// refused. `what` begins errors.
CheckpointModel load_checkpoint_model(const std::filesystem::path& dir, int64_t batch, const std::string& what);

/// A checkpoint's two files, parsed.
struct CheckpointFiles {
  Config config;  ///< from the weights' metadata
  /// @{
  /// The weights' file and the state file.
  io::SafeTensors weights, state;
  /// @}
  /// @{
  /// Their paths, for messages.
  std::string weights_path, state_path;
  /// @}
};
/// Both files, read under the checkpoint's lock and checked to belong together: the state
/// records the step and digest of the weights saved with it, and a mismatch (halves of two
/// saves) is an error naming both files.
CheckpointFiles read_checkpoint(const std::filesystem::path& dir);
/// The weights of a checkpoint into `m` (every name and shape must match; values finite);
/// a model sharing its experts takes its rows of them.
void load_weights(model::LanguageModel& m, const CheckpointFiles& files);

/// The optimiser state of a state file into `opt`, over the groups of `m` (which must be those of the
/// saved run; expert state sliced as m's experts are); returns where the loop stood.
/// `file` names the file in errors.
TrainState read_train_state(const io::SafeTensors& state, const model::LanguageModel& m, optim::Optimizer& opt,
                            const std::string& file);

}  // namespace hmoe::train
