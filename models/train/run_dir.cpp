// The run directory: its lock, what a fresh start may replace, the room for a checkpoint,
// and how a run resumes.
#include "models/train/run_dir.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/error.h"
#include "models/train/metrics.h"

namespace hmoe::train {

namespace fs = std::filesystem;

namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1u << 30));
  return buf;
}

// Creates the directory, checks it is writable and takes its lock, without waiting: a
// second trainer is told who holds it.
io::FileLock lock_run(const fs::path& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  HMOE_CHECK(!ec, "train: cannot create the run directory '", out.string(), "': ", ec.message());
  HMOE_CHECK(::access(out.c_str(), W_OK | X_OK) == 0, "train: cannot write in the run directory '", out.string(),
             "': ", std::strerror(errno));
  const fs::path path = out / "train.lock";
  io::FileLock lock(path.string(), io::FileLock::Mode::exclusive, /*wait=*/false, /*create=*/true, "train");
  if (!lock.held()) {
    std::string holder;
    try {
      holder = io::read_text_file(path.string(), "train", 64);
    } catch (const Error&) {
    }
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    HMOE_FAIL("train: another trainer is running in '", out.string(), "'",
              holder.empty() ? std::string() : " (process " + holder + ")", ": it holds ", path.string(),
              "; wait for it to finish, or choose another train.out_dir");
  }
  lock.write_contents(std::to_string(::getpid()) + "\n");
  return lock;
}

// What of an earlier run is in the directory: its checkpoint (or one a save left aside)
// and its metrics.
std::vector<std::string> run_files(const fs::path& out, const fs::path& checkpoint) {
  std::vector<std::string> found;
  for (const fs::path& p : {checkpoint, fs::path(checkpoint.string() + ".old"), out / "metrics.jsonl"})
    if (fs::exists(p)) found.push_back(p.filename().string());
  return found;
}

}  // namespace

RunDir::RunDir(const fs::path& out_dir, Start start, bool writer)
    : out_(fs::weakly_canonical(fs::absolute(out_dir))), checkpoint_(out_ / "checkpoint") {
  if (!writer) return;
  lock_.emplace(lock_run(out_));
  const std::vector<std::string> earlier = run_files(out_, checkpoint_);
  if (start == Start::fresh && !earlier.empty()) {
    std::string list;
    for (const std::string& f : earlier) list += (list.empty() ? "" : ", ") + f;
    HMOE_FAIL("train: '", out_.string(), "' already holds a run (", list,
              "): continue it with --resume, or replace it with --overwrite");
  }
  if (start == Start::overwrite) {
    io::FileLock readers(checkpoint_lock_file(checkpoint_).string(), io::FileLock::Mode::exclusive, /*wait=*/true,
                         /*create=*/true, "train");
    for (const fs::path& p : {checkpoint_, fs::path(checkpoint_.string() + ".old"),
                              fs::path(checkpoint_.string() + ".tmp"), metrics_path()})
      fs::remove_all(p);
    io::fsync_directory(out_.string());
  }
}

void RunDir::check_room(double bytes) const {
  const double free = double(io::free_bytes(out_.string(), "train"));
  HMOE_CHECK(free >= bytes, "train: '", out_.string(), "' has ", gib(free), " free, less than the ", gib(bytes),
             " a checkpoint of this model needs; free some space or choose another train.out_dir");
}

bool RunDir::restore_interrupted_save() const { return train::restore_interrupted_save(checkpoint_); }

TrainState RunDir::resume(const Config& cfg, model::LanguageModel& m, optim::Optimizer& opt) const {
  // Nothing to continue is an error, not a fresh start over the run's metrics.
  HMOE_CHECK(fs::exists(state_file(checkpoint_)), "resume: no checkpoint to continue: '",
             state_file(checkpoint_).string(), "' does not exist (run without --resume to start afresh)");
  const CheckpointFiles files = read_checkpoint(checkpoint_);
  const std::vector<std::string> diff = result_differences(files.config, cfg);
  if (!diff.empty()) {
    std::string list;
    for (const std::string& d : diff) list += "\n  " + d;
    HMOE_FAIL("resume: the checkpoint in '", checkpoint_.string(), "' was written with a different config:", list,
              "\n(a run may change train.steps, device, threads, out_dir, log_every, eval_every, eval_batches, ",
              "checkpoint_every, on_nonfinite and model.expert_recompute)");
  }
  load_weights(m, files);
  const TrainState st = read_train_state(files.state, m, opt, files.state_path);
  if (writer()) trim_metrics(metrics_path(), st.step);
  return st;
}

void RunDir::save(const Config& cfg, const CheckpointContent& content, const TrainState& st) const {
  HMOE_CHECK(writer(), "train: only the writing rank saves the checkpoint");
  save_checkpoint(checkpoint_, cfg, content, st);
}

}  // namespace hmoe::train
