// The C++ API (llmint8::*, through the dispatcher) against the float64 reference.
#include "catch_compat.h"
#include "devices.h"
#include "reference.h"

#include <llmint8/llmint8.h>

using llmint8::testing::activations;
using llmint8::testing::matches_reference;

namespace {

struct Weight {
  at::Tensor CB, SCB;
};

Weight quantized_weight(int64_t N, int64_t K, uint64_t seed = 1) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto W = at::randn({N, K}, gen) / std::sqrt(static_cast<double>(K));
  const auto q = llmint8::testing::quantize_rows(W, 0.0);
  return {q.codes, q.stats};
}

std::vector<int64_t> planted(int64_t K) { return K > 4 ? std::vector<int64_t>{1, K / 2, K - 2} : std::vector<int64_t>{}; }

}  // namespace

TEST_CASE("build_info names the version and the CUDA switch", "[api]") {
  const auto info = llmint8::build_info();
  CHECK(info.version == "0.1.0");
  CHECK(info.torch_version.rfind("2.11", 0) == 0);
  if (info.cuda) CHECK(info.cuda_architectures.find("90") != std::string::npos);
}

TEST_CASE("int8_vectorwise_quant matches the reference bit for bit", "[api]") {
  const auto [rows, K] = GENERATE(std::make_pair(1, 1), std::make_pair(7, 17), std::make_pair(17, 1025),
                                  std::make_pair(1025, 7), std::make_pair(3, 5137));
  const double threshold = GENERATE(0.0, 6.0);
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  for (const auto& device : llmint8::testing::devices()) {
    const auto A = activations(rows, K, dtype, planted(K)).to(device);
    const auto [CA, SCA, cols] = llmint8::int8_vectorwise_quant(A, threshold);
    const auto ref = llmint8::testing::quantize_rows(A.cpu(), threshold);
    REQUIRE(at::equal(CA.cpu(), ref.codes));
    REQUIRE(at::equal(SCA.cpu(), ref.stats));
    REQUIRE(cols.has_value() == (threshold > 0));
    if (cols) REQUIRE(at::equal(cols->cpu(), at::nonzero(ref.mask).flatten()));
  }
}

TEST_CASE("int8_linear_matmul is exact and int8_scaled_mm matches the reference", "[api]") {
  const auto [M, K, N] = GENERATE(std::make_tuple(1, 1, 1), std::make_tuple(7, 17, 1025),
                                  std::make_tuple(1025, 7, 17), std::make_tuple(17, 5137, 7));
  // Seeded: the process's own generator starts from a random seed, and with its draws this case
  // failed the int8_mm_dequant bound twice in about 60 runs on 2026-12-02 (not again in 650 runs
  // after; a 1 x 1 output whose bias nearly cancels its product is one way a norm-relative bound fails).
  auto gen = at::make_generator<at::CPUGeneratorImpl>(M * 7 + K * 3 + N);
  for (const auto& device : llmint8::testing::devices()) {
    const auto A = at::randint(-127, 128, {M, K}, gen, at::kChar).to(device);
    const auto B = at::randint(-127, 128, {N, K}, gen, at::kChar).to(device);
    const auto acc = llmint8::int8_linear_matmul(A, B);
    REQUIRE(at::equal(acc.cpu(), A.cpu().to(at::kLong).mm(B.cpu().to(at::kLong).t()).to(at::kInt)));
    auto out = at::full({M, N}, -1, acc.options());
    llmint8::int8_linear_matmul_out(A, B, out);
    REQUIRE(at::equal(out, acc));

    const auto row = (at::rand({M}, gen) + 0.1).to(device), col = (at::rand({N}, gen) + 0.1).to(device);
    const auto bias = at::randn({N}, gen).to(device);
    const auto ref = A.cpu().to(at::kDouble).mm(B.cpu().to(at::kDouble).t()) * row.cpu().to(at::kDouble).unsqueeze(1) *
                         col.cpu().to(at::kDouble).unsqueeze(0) / (127.0 * 127.0) + bias.cpu().to(at::kDouble);
    REQUIRE(matches_reference(llmint8::int8_scaled_mm(A, B, row, col, bias, at::kBFloat16).cpu(), ref));
    REQUIRE(matches_reference(llmint8::int8_mm_dequant(acc, row, col, at::kFloat, bias).cpu(), ref));
  }
}

TEST_CASE("int8_linear and int8_mixed_scaled_mm match the LLM.int8() reference", "[api]") {
  const auto [rows, K, N] = GENERATE(std::make_tuple(1, 1, 1), std::make_tuple(7, 17, 1025),
                                     std::make_tuple(1025, 7, 17), std::make_tuple(17, 5137, 7));
  const double threshold = GENERATE(0.0, 6.0);
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  const auto w = quantized_weight(N, K);
  for (const auto& device : llmint8::testing::devices()) {
    const auto A = activations(rows, K, dtype, planted(K)).to(device);
    const auto bias = at::randn({N}).to(dtype).to(device);
    const auto ref = llmint8::testing::int8_linear(A.cpu(), w.CB, w.SCB, bias.cpu(), threshold);
    const auto Y = llmint8::int8_linear(A, w.CB.to(device), w.SCB.to(device), bias, threshold);
    REQUIRE(Y.scalar_type() == dtype);
    REQUIRE(matches_reference(Y.cpu(), ref));

    const auto [CA, SCA, cols] = llmint8::int8_vectorwise_quant(A, threshold);
    const auto [Y2, sub_a] = llmint8::int8_mixed_scaled_mm(A, CA, w.CB.to(device), SCA, w.SCB.to(device), cols, bias);
    REQUIRE(matches_reference(Y2.cpu(), ref));
    REQUIRE(sub_a.has_value() == cols.has_value());
  }
}

TEST_CASE("int8_double_quant gives row and column quantization", "[api]") {
  const auto A = activations(33, 40, at::kFloat, {3});
  const auto [CA, CAt, row_stats, col_stats, cols] = llmint8::int8_double_quant(A, 6.0);
  const auto ref = llmint8::testing::quantize_rows(A, 6.0);
  REQUIRE(at::equal(CA, ref.codes));
  REQUIRE(at::equal(row_stats, ref.stats));
  const auto col_ref = llmint8::testing::quantize_rows(A.t().contiguous(), 0.0);  // column-wise = rows of A^T
  const auto keep = ~ref.mask;
  REQUIRE(at::equal(col_stats.masked_select(keep), col_ref.stats.masked_select(keep)));
  REQUIRE(at::equal(CAt.t().index({keep}), col_ref.codes.index({keep})));
  REQUIRE((col_stats.masked_select(ref.mask) == 0).all().item<bool>());
  REQUIRE(cols.has_value());
  const auto deq = llmint8::int8_vectorwise_dequant(CA, row_stats);
  REQUIRE(deq.scalar_type() == at::kFloat);
}
