// The CPU kernels with run-time ISA variants (VNNI GEMV, AVX-512 row quantization): every
// variant this CPU runs against the portable one and an int64 / scalar reference, bit for bit.
#include "catch_compat.h"

#include "cpu/kernels/int8_gemv.h"
#include "cpu/kernels/quantize_rowwise.h"
#include "cpu/kernels/quantize_rowwise_avx512.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace llmint8::cpu::kernels;

namespace {

constexpr GemvIsa kAllIsas[] = {GemvIsa::kPlain, GemvIsa::kAvxVnni, GemvIsa::kAvx512Vnni};

// Every int8 value, -128 included (the GEMV must be exact for all of them).
std::vector<int8_t> random_bytes(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(-128, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(dist(gen));
  return v;
}

int64_t dot64(const int8_t* a, const int8_t* b, int64_t K) {
  int64_t sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += int64_t{a[k]} * b[k];
  return sum;
}

// C [M, ldc] from one ISA over weight rows [n_begin, n_end); untouched entries stay -7.
std::vector<int32_t> gemv(GemvIsa isa, const std::vector<int8_t>& A, int64_t M, const std::vector<int8_t>& B,
                          int64_t K, int64_t n_begin, int64_t n_end, int64_t ldc) {
  std::vector<int32_t> C(M * ldc, -7);
  int8_gemv_s8s8_s32(isa, A.data(), M, B.data(), K, n_begin, n_end, C.data(), ldc);
  return C;
}

}  // namespace

TEST_CASE("the best GEMV variant is one this CPU runs", "[kernels][gemv]") {
  const GemvIsa best = best_gemv_isa();
  REQUIRE(gemv_isa_supported(best));
  REQUIRE(gemv_isa_supported(GemvIsa::kPlain));
  // A better variant than `best` never runs here: detection picks the fastest available.
  if (best != GemvIsa::kAvx512Vnni) REQUIRE_FALSE(gemv_isa_supported(GemvIsa::kAvx512Vnni));
  if (best == GemvIsa::kPlain) REQUIRE_FALSE(gemv_isa_supported(GemvIsa::kAvxVnni));
  INFO("best CPU GEMV variant: " << gemv_isa_name(best));
  REQUIRE(std::string(gemv_isa_name(best)).size() > 0);
}

TEST_CASE("int8 GEMV: every variant is exact and equal to the plain one", "[kernels][gemv]") {
  const int64_t M = GENERATE(1, 2, 3, 4);
  // K: below one vector, around the 32- and 64-byte steps, odd, and not a multiple of 4/16/64.
  const int64_t K = GENERATE(1, 3, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 1025, 4096, 5137);
  // 19 rows from 2 on: full register blocks of 4 and 8 weight rows plus remainders.
  const int64_t N = 21, n_begin = 2, n_end = N, ldc = 23;
  const auto A = random_bytes(M * K, static_cast<uint32_t>(17 * K + M));
  const auto B = random_bytes(N * K, static_cast<uint32_t>(K));
  const auto plain = gemv(GemvIsa::kPlain, A, M, B, K, n_begin, n_end, ldc);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      REQUIRE(plain[m * ldc + (n - n_begin)] == dot64(A.data() + m * K, B.data() + n * K, K));
    }
    for (int64_t j = n_end - n_begin; j < ldc; ++j) REQUIRE(plain[m * ldc + j] == -7);  // beyond the range
  }
  for (const GemvIsa isa : kAllIsas) {
    if (!gemv_isa_supported(isa)) continue;  // the variants this CPU runs are the ones users get
    INFO("variant " << gemv_isa_name(isa) << ", M " << M << ", K " << K);
    REQUIRE(gemv(isa, A, M, B, K, n_begin, n_end, ldc) == plain);
  }
}

TEST_CASE("int8 GEMV: full-scale codes at the largest K stay exact", "[kernels][gemv]") {
  // K = 133,144: 127 * 127 * K is just below 2^31. The VNNI variants' unsigned-weight trick
  // wraps its int32 accumulators past 2^31 on the way; the result must still be exact.
  const int64_t K = 133144, M = 4, N = 3;
  std::vector<int8_t> A(M * K), B(N * K);
  for (int64_t k = 0; k < K; ++k) {
    A[0 * K + k] = 127;
    A[1 * K + k] = -127;
    A[2 * K + k] = static_cast<int8_t>(k % 2 ? 127 : -127);
    A[3 * K + k] = static_cast<int8_t>(k % 3 == 0 ? 0 : (k % 3 == 1 ? 127 : -127));
    B[0 * K + k] = 127;
    B[1 * K + k] = -127;
    B[2 * K + k] = static_cast<int8_t>(k % 2 ? -127 : 127);
  }
  const auto plain = gemv(GemvIsa::kPlain, A, M, B, K, 0, N, N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) REQUIRE(plain[m * N + n] == dot64(A.data() + m * K, B.data() + n * K, K));
  }
  const int32_t full_scale = 127 * 127 * 133144;  // the largest |product|: it fits int32
  REQUIRE(plain[0 * N + 0] == full_scale);
  REQUIRE(plain[1 * N + 0] == -full_scale);
  REQUIRE(plain[2 * N + 2] == -full_scale);
  for (const GemvIsa isa : kAllIsas) {
    if (!gemv_isa_supported(isa)) continue;
    INFO("variant " << gemv_isa_name(isa));
    REQUIRE(gemv(isa, A, M, B, K, 0, N, N) == plain);
  }
}

namespace {

// A row in `format` (bits in 16-bit formats) and the same values as fp32, which the scalar
// reference quantizes: converting to fp32 is exact for all three formats.
struct Row {
  std::vector<float> f32;      // the values
  std::vector<uint16_t> bits;  // bf16 / fp16 storage (empty for fp32)
  const void* data(RowFormat format) const {
    return format == RowFormat::kFloat32 ? static_cast<const void*>(f32.data()) : bits.data();
  }
};

Row make_row(RowFormat format, const std::vector<float>& values) {
  Row row;
  for (float v : values) {
    if (format == RowFormat::kBFloat16) {
      const c10::BFloat16 h(v);
      row.bits.push_back(h.x);
      row.f32.push_back(static_cast<float>(h));
    } else if (format == RowFormat::kFloat16) {
      const c10::Half h(v);
      row.bits.push_back(h.x);
      row.f32.push_back(static_cast<float>(h));
    } else {
      row.f32.push_back(v);
    }
  }
  return row;
}

std::vector<float> normal_values(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = scale * dist(gen);
  return v;
}

bool same_stat(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

const char* format_name(RowFormat f) {
  return f == RowFormat::kFloat32 ? "fp32" : f == RowFormat::kBFloat16 ? "bf16" : "fp16";
}

}  // namespace

TEST_CASE("AVX-512 row quantization equals the scalar recipe bit for bit", "[kernels][quantize]") {
  if (!quantize_avx512_supported()) {
    WARN("no AVX-512 on this CPU: the scalar loops run instead, and are tested in test_kernels_cpu.cpp");
    return;
  }
  const auto format = GENERATE(RowFormat::kFloat32, RowFormat::kBFloat16, RowFormat::kFloat16);
  const int64_t K = GENERATE(1, 7, 15, 16, 17, 33, 64, 1025, 5137);
  // Outlier columns: none, the first, the last, and both plus one inside.
  const int which = GENERATE(0, 1, 2, 3);
  INFO(format_name(format) << ", K " << K << ", outlier set " << which);
  auto values = normal_values(K, static_cast<uint32_t>(K * 4 + which));
  std::vector<uint8_t> mask(K, 0);
  if (which == 1 || which == 3) mask[0] = 1;
  if (which == 2 || which == 3) mask[K - 1] = 1;
  if (which == 3) mask[K / 2] = 1;
  for (int64_t k = 0; k < K; ++k) {
    if (mask[k]) values[k] = (k % 2 ? 30.f : -30.f);  // an outlier that must not set the stat
  }
  if (K > 5) {
    // Stat 127 makes the scale exactly 1: x.5 values then test round half to even.
    values[1] = 127.f;
    values[2] = 2.5f;
    values[3] = 3.5f;
    values[4] = -2.5f;
  }
  const Row row = make_row(format, values);
  const uint8_t* is_outlier = which == 0 ? nullptr : mask.data();
  std::vector<int8_t> q_ref(K), q(K, 99);
  const float stat_ref = quantize_row(row.f32.data(), K, is_outlier, q_ref.data());
  const float stat = quantize_row_avx512(format, row.data(format), K, is_outlier, q.data());
  REQUIRE(same_stat(stat, stat_ref));
  REQUIRE(q == q_ref);
  for (int64_t k = 0; k < K; ++k) {
    if (mask[k]) REQUIRE(q[k] == 0);
  }
  if (K > 5 && !mask[1] && !mask[2] && !mask[3] && !mask[4]) {
    REQUIRE(stat == 127.f);
    REQUIRE((q[2] == 2 && q[3] == 4 && q[4] == -2));
  }
}

TEST_CASE("AVX-512 row quantization: zero, NaN and inf rows", "[kernels][quantize]") {
  if (!quantize_avx512_supported()) {
    WARN("no AVX-512 on this CPU: the scalar loops run instead");
    return;
  }
  const auto format = GENERATE(RowFormat::kFloat32, RowFormat::kBFloat16, RowFormat::kFloat16);
  const int64_t K = 37;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<std::vector<float>> rows = {
      std::vector<float>(K, 0.f),
      [&] { auto v = normal_values(K, 1); v[20] = nan; return v; }(),
      [&] { auto v = normal_values(K, 2); v[36] = -inf; return v; }(),
      [&] { auto v = normal_values(K, 3); v[0] = nan; v[5] = 100.f; return v; }(),  // NaN first, larger later
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    INFO(format_name(format) << ", row " << i);
    const Row row = make_row(format, rows[i]);
    std::vector<int8_t> q_ref(K), q(K, 99);
    const float stat_ref = quantize_row(row.f32.data(), K, nullptr, q_ref.data());
    const float stat = quantize_row_avx512(format, row.data(format), K, nullptr, q.data());
    REQUIRE(same_stat(stat, stat_ref));
    REQUIRE(q == q_ref);
  }
  // An inf in an outlier column is left out: the stat and codes come from the other columns.
  auto v = normal_values(K, 4);
  v[9] = inf;
  std::vector<uint8_t> mask(K, 0);
  mask[9] = 1;
  const Row row = make_row(format, v);
  std::vector<int8_t> q_ref(K), q(K, 99);
  const float stat_ref = quantize_row(row.f32.data(), K, mask.data(), q_ref.data());
  REQUIRE(std::isfinite(stat_ref));
  REQUIRE(quantize_row_avx512(format, row.data(format), K, mask.data(), q.data()) == stat_ref);
  REQUIRE(q == q_ref);
}

TEST_CASE("AVX-512 outlier columns equal the scalar ones", "[kernels][quantize]") {
  if (!quantize_avx512_supported()) {
    WARN("no AVX-512 on this CPU: the scalar loops run instead");
    return;
  }
  const auto format = GENERATE(RowFormat::kFloat32, RowFormat::kBFloat16, RowFormat::kFloat16);
  const int64_t rows = GENERATE(1, 3, 16);
  const int64_t K = GENERATE(1, 17, 80, 1025);
  INFO(format_name(format) << ", rows " << rows << ", K " << K);
  auto values = normal_values(rows * K, static_cast<uint32_t>(rows * K), 2.5f);  // a few |x| >= 6 at random
  values[0] = 6.f;                                    // exactly the threshold: an outlier
  values[rows * K - 1] = -40.f;                       // last column of the last row
  if (rows * K > 2) values[rows * K / 2] = std::numeric_limits<float>::quiet_NaN();  // never an outlier
  const Row row = make_row(format, values);
  std::vector<uint8_t> ref(K), got(K, 7);
  mark_outlier_columns(row.f32.data(), rows, K, 6.f, ref.data());
  mark_outlier_columns_avx512(format, row.data(format), rows, K, 6.f, got.data());
  REQUIRE(got == ref);
  REQUIRE(ref[0] == 1);
  REQUIRE(ref[K - 1] == 1);
}
