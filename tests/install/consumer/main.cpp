// Uses the installed engine: a tiny autograd computation through the public header.
#include <hmoe/hmoe.h>

#include <cmath>
#include <cstdio>

int main() {
  using namespace hmoe;
  Tensor x = full({3}, 2.0, {DType::f64, Device::cpu(), true});
  Tensor y = sum(x * x);
  y.backward();
  const double g = x.grad().to_vector()[0];
  std::printf("consumer: y = %g, dy/dx = %g\n", y.item(), g);
  return std::abs(g - 4.0) < 1e-12 ? 0 : 1;
}
