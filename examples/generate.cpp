// Loads a checkpoint written by `hmoe train` and samples text from it.
// usage: generate CHECKPOINT_DIR [PROMPT]
#include <hmoe/models/train/generate.h>

#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR [PROMPT]\n", argv[0]);
    return 2;
  }
  hmoe::train::GenerateOptions opts;
  opts.prompt = argc > 2 ? argv[2] : "The ";
  opts.max_tokens = 60;
  opts.temperature = 0.8;
  opts.top_k = 40;
  opts.seed = 7;
  try {
    std::printf("%s\n", hmoe::train::generate_text(argv[1], opts).c_str());
  } catch (const std::exception& e) {  // hmoe::Error: a missing or damaged checkpoint
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
