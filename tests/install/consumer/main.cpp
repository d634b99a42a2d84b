// Uses the installed engine: a tiny autograd computation through the public header, and
// a safetensors round trip.
#include <hmoe/config.h>
#include <hmoe/engine/io/safetensors.h>
#include <hmoe/hmoe.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

int main() {
  using namespace hmoe;
  Tensor x = full({3}, 2.0, {DType::f64, Device::cpu(), true});
  Tensor y = sum(x * x);
  y.backward();
  const double g = x.grad().to_vector()[0];
  const std::string path = (std::filesystem::temp_directory_path() / "hmoe_consumer.safetensors").string();
  io::save_safetensors(path, {{"x", x.detach()}});
  const double back = io::load_safetensors(path).tensors.at("x").to_vector()[2];
  std::filesystem::remove(path);
  std::printf("consumer (hmoe %s, GPU backend %s): y = %g, dy/dx = %g, saved and loaded x = %g\n", HMOE_VERSION,
              HMOE_BUILD_GPU, y.item(), g, back);
  return std::abs(g - 4.0) < 1e-12 && back == 2.0 ? 0 : 1;
}
