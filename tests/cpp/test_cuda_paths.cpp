// Every CUDA product backend and quantization kernel against the float64 reference, on
// shapes chosen to reach each of them; small enough to run under compute-sanitizer
// (tests/run_gpu.sh runs memcheck and racecheck over this suite). Skipped without a GPU.
#include "catch_compat.h"
#include "reference.h"

#include <llmint8/llmint8.h>

#include <ATen/Context.h>

using llmint8::testing::activations;
using llmint8::testing::matches_reference;

namespace {

std::vector<int64_t> columns(int64_t K, int count) {  // first and last column, then spread out
  std::vector<int64_t> cols;
  if (count == 0) return cols;
  cols.push_back(0);
  if (count > 1) cols.push_back(K - 1);
  for (int i = 2; i < count; ++i) cols.push_back(1 + (i * (K - 2)) / count);
  return cols;
}

}  // namespace

TEST_CASE("CUDA paths of int8_linear match the LLM.int8() reference", "[cuda][cuda_paths]") {
  if (!at::globalContext().hasCUDA()) {
    SUCCEED("no GPU");
    return;
  }
  // (M, K, N): one and two rows in one kernel (gemv_fused; 20002 rows are more than one resident
  // wave of its blocks, so its warps loop over rows), decode in one block and in a
  // cluster (16 x 1024), both halves of the 16-row tile (7, 9), prefill on the Hopper GEMM (96 and 33
  // at t=0, 300; 96 at t=6 takes the dequantized-activation product) and, with K % 16 != 0, on
  // the int32 GEMM. At t=6, fp16 and bf16: 24 and 33 rows (a partial block of weight rows; 33: a
  // second group of rows, one row in it) take dequantized_mma. 160 outlier columns: past the
  // gathered ones (64).
  const auto [M, K, N] = GENERATE(std::make_tuple(1, 1024, 136), std::make_tuple(2, 1024, 72),
                                  std::make_tuple(2, 256, 20002), std::make_tuple(7, 512, 72),
                                  std::make_tuple(9, 1027, 72),
                                  std::make_tuple(16, 1024, 200), std::make_tuple(24, 1024, 520),
                                  std::make_tuple(96, 1024, 136),
                                  std::make_tuple(300, 1027, 72), std::make_tuple(33, 512, 1032));
  const int outliers = GENERATE(0, 9, 80, 160);
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const auto W = at::randn({N, K}, gen) / std::sqrt(static_cast<double>(K));
  const auto w = llmint8::testing::quantize_rows(W, 0.0);
  const auto A = activations(M, K, dtype, columns(K, outliers));
  const auto bias = at::randn({N}).to(dtype);
  for (const double threshold : {0.0, 6.0}) {
    const auto ref = llmint8::testing::int8_linear(A, w.codes, w.stats, bias, threshold);
    const auto Y = llmint8::int8_linear(A.cuda(), w.codes.cuda(), w.stats.cuda(), bias.cuda(), threshold);
    INFO("M=" << M << " K=" << K << " N=" << N << " outliers=" << outliers << " threshold=" << threshold);
    REQUIRE(Y.scalar_type() == dtype);
    REQUIRE(matches_reference(Y.cpu(), ref));
    const auto [CA, SCA, cols] = llmint8::int8_vectorwise_quant(A.cuda(), threshold);
    const auto q = llmint8::testing::quantize_rows(A, threshold);
    REQUIRE(at::equal(CA.cpu(), q.codes));
    REQUIRE(at::equal(SCA.cpu(), q.stats));
    if (cols) REQUIRE(at::equal(cols->cpu(), at::nonzero(q.mask).flatten()));
  }
}
