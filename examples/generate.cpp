// Loads a checkpoint written by `hmoe train` and samples text from it with the key/value
// cache: the tokens are bytes, printed as they are made. usage: generate CHECKPOINT_DIR [PROMPT]
#include <hmoe/hmoe.h>

#include <cstdio>
#include <exception>
#include <string>

using namespace hmoe;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR [PROMPT]\n", argv[0]);
    return 2;
  }
  const std::string prompt = argc > 2 ? argv[2] : "The ";
  try {
    // One loaded model may serve many threads, each generating with its own requests.
    const auto model = infer::Model::load(argv[1]);
    infer::Request r;
    for (unsigned char c : prompt) r.prompt.push_back(c);
    r.max_tokens = 60;
    r.sampling = {.temperature = 0.8, .top_k = 40, .top_p = 0.95, .seed = 7};
    std::printf("%s", prompt.c_str());
    infer::generate(model, {r}, [](int64_t, int64_t token) {
      std::putchar(int(token));
      std::fflush(stdout);
    });
    std::printf("\n");
  } catch (const std::exception& e) {  // hmoe::Error: a missing or damaged checkpoint
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
