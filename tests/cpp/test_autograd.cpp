// MatMul8bitLt from LibTorch C++: gradients of int8_linear against float64.
#include "catch_compat.h"
#include "devices.h"
#include "reference.h"

#include <llmint8/llmint8.h>

#include <torch/autograd.h>

using llmint8::testing::activations;
using llmint8::testing::matches_reference;

TEST_CASE("int8_linear backward gives dA, dbias and the float weight's dW", "[autograd]") {
  const double threshold = GENERATE(0.0, 6.0);
  const auto dtype = GENERATE(at::kHalf, at::kFloat);
  for (const auto& device : llmint8::testing::devices()) {
    const int64_t rows = 9, K = 40, N = 12;
    const auto W = (at::randn({N, K}) / std::sqrt(40.0));
    const auto q = llmint8::testing::quantize_rows(W, 0.0);
    const auto A = activations(rows, K, dtype, {2, 30}).to(device).requires_grad_();
    const auto bias = at::randn({N}).to(dtype).to(device).requires_grad_();
    const auto Wf = W.to(dtype).to(device).requires_grad_();
    const auto dY = at::randn({rows, N}).to(dtype).to(device);

    const auto Y = llmint8::int8_linear(A, q.codes.to(device), q.stats.to(device), bias, threshold, Wf);
    const auto grads = torch::autograd::grad({Y}, {A, bias, Wf}, {dY});
    const auto dY64 = dY.cpu().to(at::kDouble);
    REQUIRE(matches_reference(grads[0].cpu(), dY64.mm(llmint8::testing::dequantize_weight(q.codes, q.stats))));
    REQUIRE(matches_reference(grads[1].cpu(), dY64.sum(0)));
    REQUIRE(matches_reference(grads[2].cpu(), dY64.t().mm(A.detach().cpu().to(at::kDouble))));
  }
}

TEST_CASE("int8_linear without a float weight differentiates A alone", "[autograd]") {
  const auto q = llmint8::testing::quantize_rows(at::randn({6, 10}), 0.0);
  const auto A = at::randn({3, 10}).requires_grad_();
  const auto Y = llmint8::int8_linear(A, q.codes, q.stats);
  Y.sum().backward();
  REQUIRE(A.grad().defined());
  REQUIRE(matches_reference(A.grad(), at::ones({3, 6}, at::kDouble).mm(llmint8::testing::dequantize_weight(q.codes, q.stats))));
}
