// Quantizes a weight, runs the layer op at threshold 6 and prints the error against fp32.
#include <llmint8/llmint8.h>

#include <ATen/ATen.h>

#include <iostream>

int main() {
  const auto W = at::randn({64, 256}) / 16.0;
  const auto x = at::randn({4, 256});
  const auto [CB, SCB, unused] = llmint8::int8_vectorwise_quant(W);
  const auto y = llmint8::int8_linear(x, CB, SCB, /*bias=*/{}, /*threshold=*/6.0);
  const auto ref = x.mm(W.t());
  const double err = ((y - ref).norm() / ref.norm()).item<double>();
  std::cout << "llmint8 " << llmint8::build_info().version << " relative error " << err << "\n";
  return err < 0.05 ? 0 : 1;
}
