/// @file
/// Training configuration: the model's (models/hypermoe/config.h), data and optimisation
/// settings, read from a TOML or JSON file plus "section.key=value" overrides, validated
/// strictly (unknown keys, wrong types and unknown names are errors), with model presets
/// (tiny, small, base).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dist/communicator.h"
#include "models/hypermoe/config.h"

namespace hmoe::train {

/// train.device as a config writes it: cpu, cuda (device 0) or cuda:N. `numbered` keeps
/// "cuda" apart from "cuda:0", so that a config reads back as it was written.
struct DeviceSetting {
  Device device = Device::cpu();  ///< the device
  bool numbered = false;          ///< whether it was written with its number ("cuda:0" rather than "cuda")
  /// As the config writes it.
  std::string str() const;
};
/// Errors name the key: "config: train.device: bad device string ...".
DeviceSetting parse_device_setting(const std::string& s);

/// train.on_nonfinite: what a step whose loss or gradient norm is not finite does. stop:
/// the run ends with an error naming the step, its update not applied, a checkpoint of
/// the step before saved; skip: the update is dropped (the data are consumed and the step
/// counts, as large-scale trainers do) and the run goes on.
enum class NonFinitePolicy : uint8_t { stop, skip };
/// The policy's name (stop | skip).
std::string_view name(NonFinitePolicy p);
/// The policy named s.
NonFinitePolicy parse_nonfinite_policy(std::string_view s);

/// The [data] section: where the training text or tokens come from.
struct DataConfig {
  std::vector<std::string> text;  ///< text files or directories; empty: the default corpus
  std::string tokens;             ///< a pre-tokenised file instead of text
  int64_t token_width = 2;        ///< 2 = uint16, 4 = uint32
  double val_fraction = 0.05;     ///< the fraction of the data held out for validation
};

/// The [train] section: the step loop, the optimiser and its schedule, logging and the device.
struct OptimConfig {
  /// @{
  /// Optimiser steps, sequences per step, micro-batches accumulated per step.
  int64_t steps = 600, batch_size = 16, grad_accum = 1;
  /// @}
  /// @{
  /// Peak learning rate and the cosine schedule's floor.
  double lr = 2e-3, min_lr = 2e-4;
  /// @}
  int64_t warmup = 50;  ///< linear warm-up steps
  /// @{
  /// AdamW's weight decay, moment decay rates and epsilon; the gradient-norm clip (0: none).
  double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
  /// @}
  /// The hypernetwork's parameters (hyper.*) train at this fraction of lr. Its heads start
  /// near zero (hyperfanin) and Adam moves each weight by about lr per step whatever its
  /// gradient's size, so at a pre-training lr the generated adapters grow fast.
  double hyper_lr_scale = 1.0;
  /// @{
  /// Every how many steps to evaluate, how many validation batches, every how many steps to log
  /// and to save a checkpoint (eval_every, checkpoint_every 0: only when the run stops).
  int64_t eval_every = 100, eval_batches = 8, log_every = 10, checkpoint_every = 0;
  /// @}
  /// @{
  /// The run's seed; CPU threads.
  int64_t seed = 1337, threads = 0;  ///< threads 0: all cores
  /// @}
  DeviceSetting device;                                  ///< cpu | cuda | cuda:N
  NonFinitePolicy on_nonfinite = NonFinitePolicy::stop;  ///< what a step with a non-finite loss or gradient norm does
  std::string out_dir = "runs/hmoe";                     ///< the run directory (checkpoint, metrics)
};

/// Training over several processes (`mpirun -np W hmoe train ...`): every rank is a
/// data-parallel rank with train.batch_size / W of each step's sequences; the experts of
/// every MoE layer are shared in contiguous blocks by groups of `ep` consecutive ranks
/// (ep divides W and model.n_experts). None of it changes what a run computes: the same
/// config gives the same run on any number of processes.
struct DistConfig {
  int64_t ep = 1;  ///< ranks sharing each MoE layer's experts (divides the process count and model.n_experts)
  dist::Backend backend = dist::Backend::automatic;  ///< auto | single | mpi | nccl
  /// A collective still waiting after this many seconds ends the job, every rank exiting
  /// non-zero with the rank and collective named (a failed or stuck rank; 0: never).
  double timeout_s = 600;
};

/// A whole training config: the [model], [data], [train] and [dist] sections.
struct Config {
  model::ModelConfig model{.vocab_size = 0};  ///< 0: from the data (the trainer sets it)
  DataConfig data;                            ///< [data]
  OptimConfig train;                          ///< [train]
  DistConfig dist;                            ///< [dist]
};

/// Defaults < preset < file < overrides. `path` may be empty (defaults only). The file is
/// TOML when its name ends in .toml, else JSON.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);
/// The syntax of a config's text.
enum class ConfigFormat : uint8_t { toml, json };
/// The same from a config's text; `name` stands for the file in messages.
Config load_config_text(std::string_view text, ConfigFormat format, const std::string& name,
                        const std::vector<std::string>& overrides);
/// The config as JSON text (written into checkpoints; read back by parse_config_json,
/// which validates it: a checkpoint's config is input like any other).
std::string config_to_json(const Config& c);
/// A config from config_to_json's text, validated.
Config parse_config_json(const std::string& json_text);
/// Checks value ranges and consistency (the model's with model::validate, then the
/// data's and the optimiser's).
void validate(const Config& c);

/// The data paths (data.text, data.tokens) made canonical and absolute: what a checkpoint
/// records, so that a resume from another working directory reads them as the same files.
void make_data_paths_canonical(Config& c);

/// What differs between a checkpoint's config and this run's among the settings that
/// change what a run computes, one "key: A in the checkpoint, B now" per key. Not among
/// them: train.steps (a run may be extended), the device, the thread count,
/// model.expert_recompute (the same results to the bit), where the run lives
/// (train.out_dir), how often it logs, evaluates and saves, train.on_nonfinite
/// (resuming with skip gets past a step that stopped the run) and the [dist] section (a
/// run may continue on another number of processes). Data paths compare as canonical
/// paths.
std::vector<std::string> result_differences(const Config& checkpoint, const Config& now);

}  // namespace hmoe::train
