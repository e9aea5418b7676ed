// The torch-free CPU kernels on raw arrays, against double-precision loops.
#include "catch_compat.h"

#include "cpu/kernels/int8_gemm.h"
#include "cpu/kernels/quantize_rowwise.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace llmint8::cpu::kernels;

namespace {

std::vector<float> random_row(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<int8_t> random_codes(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(dist(gen));
  return v;
}

}  // namespace

TEST_CASE("quantize_value rounds half to even and saturates at +-127", "[kernels]") {
  CHECK(quantize_value(0.5f, 1.f) == 0);
  CHECK(quantize_value(1.5f, 1.f) == 2);
  CHECK(quantize_value(2.5f, 1.f) == 2);
  CHECK(quantize_value(-2.5f, 1.f) == -2);
  CHECK(quantize_value(127.4f, 1.f) == 127);
  CHECK(quantize_value(-300.f, 1.f) == -127);
}

TEST_CASE("quantize_row matches the fp32 recipe on awkward sizes", "[kernels]") {
  const int64_t K = GENERATE(1, 7, 17, 1025, 5137);
  const auto a = random_row(K, static_cast<uint32_t>(K));
  std::vector<int8_t> q(K);
  const float stat = quantize_row(a.data(), K, nullptr, q.data());
  float expected_stat = 0.f;
  for (float x : a) expected_stat = std::max(expected_stat, std::fabs(x));
  REQUIRE(stat == expected_stat);
  const float scale = static_cast<float>(127.0 / static_cast<double>(stat));
  for (int64_t k = 0; k < K; ++k) {
    const double code = std::nearbyint(static_cast<double>(a[k] * scale));
    REQUIRE(q[k] == static_cast<int8_t>(code));
    // and the code is within half a step of the value
    REQUIRE(std::fabs(q[k] * stat / 127.0 - a[k]) <= 0.5 * stat / 127.0 + 1e-6);
  }
}

TEST_CASE("outlier columns are zero and left out of the stat", "[kernels]") {
  const int64_t rows = 3, K = 9;
  auto a = random_row(rows * K, 5);
  a[1 * K + 4] = 50.f;  // column 4 becomes an outlier column for every row
  std::vector<uint8_t> mask(K);
  mark_outlier_columns(a.data(), rows, K, 6.f, mask.data());
  for (int64_t k = 0; k < K; ++k) REQUIRE(mask[k] == (k == 4 ? 1 : 0));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int8_t> q(K);
    const float stat = quantize_row(a.data() + r * K, K, mask.data(), q.data());
    float expected = 0.f;
    for (int64_t k = 0; k < K; ++k) {
      if (k != 4) expected = std::max(expected, std::fabs(a[r * K + k]));
    }
    REQUIRE(stat == expected);
    REQUIRE(q[4] == 0);
  }
}

TEST_CASE("non-finite values make the stat non-finite and the codes zero", "[kernels]") {
  std::vector<float> a = {1.f, std::numeric_limits<float>::quiet_NaN(), 3.f, 2.f};
  std::vector<int8_t> q(4, 99);
  REQUIRE(std::isnan(quantize_row(a.data(), 4, nullptr, q.data())));
  for (auto c : q) REQUIRE(c == 0);
  a[1] = std::numeric_limits<float>::infinity();
  REQUIRE(std::isinf(quantize_row(a.data(), 4, nullptr, q.data())));
  // NaN first, then larger values: the stat must stay NaN
  std::vector<float> b = {std::numeric_limits<float>::quiet_NaN(), 5.f, 9.f};
  REQUIRE(std::isnan(quantize_row(b.data(), 3, nullptr, q.data())));
}

TEST_CASE("int8_gemm is exact in int32 on awkward sizes", "[kernels]") {
  const int64_t M = GENERATE(1, 7, 17);
  const int64_t K = GENERATE(1, 17, 1025, 5137);
  const int64_t N = GENERATE(1, 7, 17);
  const auto A = random_codes(M * K, 1);
  const auto B = random_codes(N * K, 2);
  std::vector<int32_t> C(M * N, -1);
  int8_gemm(A.data(), B.data(), M, K, 0, N, [&](int64_t m, int64_t n, int32_t acc) { C[m * N + n] = acc; });
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      int64_t expected = 0;
      for (int64_t k = 0; k < K; ++k) expected += int64_t{A[m * K + k]} * B[n * K + k];
      REQUIRE(C[m * N + n] == expected);
    }
  }
}

TEST_CASE("int8_gemm covers only its column range", "[kernels]") {
  const int64_t M = 2, K = 5, N = 6;
  const auto A = random_codes(M * K, 3);
  const auto B = random_codes(N * K, 4);
  std::vector<int> visits(M * N, 0);
  int8_gemm(A.data(), B.data(), M, K, 2, 5, [&](int64_t m, int64_t n, int32_t) { ++visits[m * N + n]; });
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) REQUIRE(visits[m * N + n] == ((n >= 2 && n < 5) ? 1 : 0));
  }
}

TEST_CASE("column quantization and dequantization", "[kernels]") {
  const int64_t rows = 17, K = 7;
  const auto a = random_row(rows * K, 11);
  std::vector<int8_t> q(rows * K);
  std::vector<float> col_stats(K);
  quantize_columns(a.data(), rows, K, nullptr, q.data(), col_stats.data());
  for (int64_t k = 0; k < K; ++k) {
    float expected = 0.f;
    for (int64_t r = 0; r < rows; ++r) expected = std::max(expected, std::fabs(a[r * K + k]));
    REQUIRE(col_stats[k] == expected);
    for (int64_t r = 0; r < rows; ++r) {
      REQUIRE(std::fabs(q[r * K + k] * expected / 127.0 - a[r * K + k]) <= 0.5 * expected / 127.0 + 1e-6);
    }
  }
  std::vector<float> stats(rows, 2.f), out(rows * K);
  dequantize_rows(q.data(), stats.data(), K, 0, rows, out.data());
  for (int64_t i = 0; i < rows * K; ++i) REQUIRE(out[i] == q[i] * 2.f / 127.f);
}
