// The run directory: where a run's checkpoint and metrics live, and how a run resumes.
#include "models/train/run_dir.h"

#include "engine/error.h"
#include "models/train/metrics.h"

namespace hmoe::train {

namespace fs = std::filesystem;

namespace {

// Extending the run is allowed, on another device too, and so is changing what leaves
// the results as they are: the thread count, recomputing the experts' pre-activation.
void check_same_run(const Config& saved, const Config& cfg, const fs::path& ckpt) {
  Config a = saved, b = cfg;
  a.train.steps = b.train.steps = 0;
  a.train.device = b.train.device = DeviceSetting{};
  a.train.threads = b.train.threads = 0;
  a.model.expert_recompute = b.model.expert_recompute = false;
  HMOE_CHECK(config_to_json(a) == config_to_json(b), "resume: the checkpoint in '", ckpt.string(),
             "' was written with a different config");
}

}  // namespace

RunDir::RunDir(const fs::path& out_dir) : out_(out_dir), checkpoint_(out_dir / "checkpoint") {
  fs::create_directories(out_);
}

bool RunDir::restore_interrupted_save() const { return train::restore_interrupted_save(checkpoint_); }

TrainState RunDir::resume(const Config& cfg, model::LanguageModel& m, ParamGroups& groups) const {
  // Nothing to continue is an error, not a fresh start over the run's metrics.
  HMOE_CHECK(fs::exists(state_file(checkpoint_)), "resume: no checkpoint to continue: '",
             state_file(checkpoint_).string(), "' does not exist (run without --resume to start afresh)");
  check_same_run(checkpoint_config(checkpoint_), cfg, checkpoint_);
  load_weights(m, checkpoint_);
  const TrainState st = load_train_state(checkpoint_, groups);
  trim_metrics(metrics_path(), st.step);
  return st;
}

void RunDir::save(const Config& cfg, const model::LanguageModel& m, const ParamGroups& groups,
                  const TrainState& st) const {
  save_checkpoint(checkpoint_, cfg, m, groups, st);
}

}  // namespace hmoe::train
