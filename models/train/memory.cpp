// Memory estimates from the parameter count and the step's shapes, and the check against
// sysconf's physical memory or the cuda device's.
#include "models/train/memory.h"

#include <unistd.h>

#include <cstdio>

#include "engine/error.h"
#include "models/hypermoe/shapes.h"
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::train {

namespace {

std::string bytes_str(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) b /= 1024, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

// Values per token a step keeps for its backward in the model's dtype (about 12 x
// d_model a layer, plus twice the FFN's width), and f32 vocabulary vectors per token.
struct PerToken {
  double layer_values, vocab_f32;
};
PerToken per_token(const model::ModelConfig& m) {
  const double ffn_width = double(m.d_ff) * (m.ffn == model::FfnKind::dense ? 1.0 : double(m.top_k));
  return {12.0 * double(m.d_model) + 2.0 * ffn_width, 3.0 * double(m.vocab_size)};
}

double physical_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

// `part` names what must fit in `where` when it is not the whole estimate.
void refuse_over(const MemoryEstimate& e, double needed, double available, const std::string& what,
                 const std::string& where, const std::string& part) {
  HMOE_CHECK(available <= 0 || needed <= available, what, ": the model needs ", e.str(), "; ",
             part.empty() ? std::string("that is") : part + ", " + bytes_str(needed) + ", is", " more than the ",
             bytes_str(available), " of ", where, " (a smaller model, batch or block size fits)");
}

}  // namespace

std::string MemoryEstimate::str() const {
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", parameters);
  return "about " + bytes_str(total()) + " (" + count + " parameters: weights " + bytes_str(weights) + ", gradients " +
         bytes_str(gradients) + ", optimizer " + bytes_str(optimizer) + ", activations " + bytes_str(activations) + ")";
}

MemoryEstimate estimate_training_memory(const Config& c) {
  const model::ModelConfig& m = c.model;
  const double params = double(model::count_parameters(m)), elt = double(dtype_size(m.dtype));
  const bool half = m.dtype != DType::f32;
  MemoryEstimate e;
  e.parameters = params;
  e.weights = params * elt;
  e.gradients = params * elt;
  e.optimizer = params * (8.0 + (half ? 4.0 : 0.0));  // exp_avg, exp_avg_sq (+ the f32 masters)
  const PerToken t = per_token(m);
  const double tokens = double(c.train.batch_size) * double(m.block_size);
  e.activations = tokens * (double(m.n_layer) * t.layer_values * elt + 2.0 * double(m.d_model) * elt + t.vocab_f32 * 4);
  return e;
}

MemoryEstimate estimate_inference_memory(const model::ModelConfig& m, int64_t batch) {
  MemoryEstimate e;
  e.parameters = double(model::count_parameters(m));
  e.weights = e.parameters * 4.0;  // built in f32, then cast
  const PerToken t = per_token(m);
  const double tokens = double(batch) * double(m.block_size), elt = double(dtype_size(m.dtype));
  e.activations = tokens * (t.layer_values * elt + t.vocab_f32 * 4);
  return e;
}

void check_memory(const MemoryEstimate& e, const Device& device, const std::string& what) {
  if (device.is_cpu()) {
    refuse_over(e, e.total(), physical_memory(), what, "this machine's memory", "");
    return;
  }
  // On a device, the model is built in f32 on the host first.
  refuse_over(e, e.parameters * 4.0, physical_memory(), what, "this machine's memory",
              "its f32 copy built on the host");
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
  if (cuda::device_available()) {
    cuda::check_device(device.index);
    refuse_over(e, e.total(), double(cuda::properties(device.index).global_memory), what,
                "memory on " + device.str(), "");
  }
#endif
}

}  // namespace hmoe::train
