// libFuzzer target: a training state file (state.safetensors) read into the optimiser
// groups of a small dense model, as --resume reads it: any malformed file, metadata or
// tensor that does not fit must be refused with hmoe::Error, never crash or read out of
// bounds (run under ASan). The seed corpus (corpus_state/) holds this model's state after
// two steps (`hmoe train model.ffn=dense model.n_layer=1 model.d_model=4 model.n_head=1
// model.d_ff=4 model.block_size=4 model.vocab_size=8 data.tokens=<ids 0..7 repeated>
// train.steps=2 train.batch_size=2`), as saved and with its digests and config taken out (as a file of
// another tool: the fuzzer's changes then reach the state's own checks).
#include <cstddef>
#include <cstdint>

#include "engine/error.h"
#include "engine/io/safetensors.h"
#include "models/hypermoe/lm.h"
#include "models/train/checkpoint.h"
#include "models/train/param_groups.h"

namespace {

// The model the seeds were saved from.
struct Fixture {
  hmoe::train::Config cfg;
  std::unique_ptr<hmoe::model::LanguageModel> model;
  std::unique_ptr<hmoe::optim::AdamW> opt;
  Fixture()
      : cfg(hmoe::train::load_config("", {"model.ffn=dense", "model.n_layer=1", "model.d_model=4", "model.n_head=1",
                                          "model.d_ff=4", "model.block_size=4", "model.vocab_size=8"})) {
    model = std::make_unique<hmoe::model::LanguageModel>(cfg.model, 0);
    opt = hmoe::train::make_optimizer(*model, cfg.train);
  }
};

// Built once: libFuzzer calls the target many times in one process.
Fixture& fixture() {
  static Fixture f;
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  try {
    const hmoe::io::SafeTensors state = hmoe::io::parse_safetensors(data, size);
    hmoe::train::read_train_state(state, *f.model, *f.opt, "fuzz");
  } catch (const hmoe::Error&) {
  }
  return 0;
}
