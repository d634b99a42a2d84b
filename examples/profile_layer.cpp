// Profiles a HyperMoE layer's forward and backward and writes a Chrome trace (open it
// in Perfetto, https://ui.perfetto.dev, or chrome://tracing). usage: profile_layer [trace.json]
#include <hmoe/hmoe.h>

#include <cstdio>
#include <fstream>

using namespace hmoe;

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "trace.json";
  model::FfnOptions o;  // the tiny preset's layer sizes: d_model 128, d_ff 512, 8 experts
  Generator gen(1);
  model::HyperMoEFFN layer(o, gen);
  const Tensor x = normal({256, o.d_model}, gen);

  Profiler prof;  // records every op run on this thread while it lives
  model::FfnStats stats;
  sum(layer.forward(x, stats, gen)).backward();

  std::printf("%s", prof.summary().c_str());
  std::ofstream(path) << prof.chrome_trace();
  std::printf("wrote %s (%zu events)\n", path, prof.events().size());
  return prof.events().empty() ? 1 : 0;
}
