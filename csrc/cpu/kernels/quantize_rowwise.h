// Torch-free CPU loops of LLM.int8() quantization on raw row-major arrays.
// T is any type that converts to and from float (float, c10::Half, c10::BFloat16).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace llmint8::cpu::kernels {

// Step of a NaN-propagating absmax: once a NaN is seen the stat stays NaN, so
// a row holding non-finite values can never dequantize to finite garbage.
inline float absmax_step(float current, float value) {
  const float a = std::fabs(value);
  return (a > current || std::isnan(a)) ? a : current;
}

// 127 / stat, or 0 when the stat is 0 or not finite (codes are then all 0 and
// the non-finite stat itself carries the NaN/inf into every dequantized value).
inline float code_scale(float stat) { return (std::isfinite(stat) && stat > 0.f) ? 127.f / stat : 0.f; }

// rint(x * scale) in fp32, round half to even, in [-127, 127].
inline int8_t quantize_value(float x, float scale) {
  const float q = std::nearbyint(x * scale);
  return static_cast<int8_t>(std::min(127.f, std::max(-127.f, q)));
}

// is_outlier[k] = 1 when |a[r, k]| >= threshold for some row r, else 0.
// a: [rows, K]; is_outlier: [K].
template <typename T>
void mark_outlier_columns(const T* a, int64_t rows, int64_t K, float threshold, uint8_t* is_outlier) {
  std::fill(is_outlier, is_outlier + K, uint8_t{0});
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = a + r * K;  // 64-bit offsets: rows * K may pass 2^31
    for (int64_t k = 0; k < K; ++k) {
      if (std::fabs(static_cast<float>(row[k])) >= threshold) is_outlier[k] = 1;
    }
  }
}

// Quantizes one row a [K] into q [K] and returns its stat (absmax over the
// columns that are not outliers). is_outlier may be null (no outliers).
template <typename T>
float quantize_row(const T* a, int64_t K, const uint8_t* is_outlier, int8_t* q) {
  float stat = 0.f;
  for (int64_t k = 0; k < K; ++k) {
    if (is_outlier == nullptr || !is_outlier[k]) stat = absmax_step(stat, static_cast<float>(a[k]));
  }
  const float scale = code_scale(stat);
  for (int64_t k = 0; k < K; ++k) {
    const bool skip = scale == 0.f || (is_outlier != nullptr && is_outlier[k]);
    q[k] = skip ? int8_t{0} : quantize_value(static_cast<float>(a[k]), scale);
  }
  return stat;
}

// Column-wise quantization of a [rows, K] into q [rows, K] with col_stats [K];
// outlier columns (is_outlier may be null) get stat 0 and codes 0.
template <typename T>
void quantize_columns(const T* a, int64_t rows, int64_t K, const uint8_t* is_outlier, int8_t* q, float* col_stats) {
  std::fill(col_stats, col_stats + K, 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = a + r * K;
    for (int64_t k = 0; k < K; ++k) {
      if (is_outlier == nullptr || !is_outlier[k]) col_stats[k] = absmax_step(col_stats[k], static_cast<float>(row[k]));
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = a + r * K;
    int8_t* qrow = q + r * K;
    for (int64_t k = 0; k < K; ++k) {
      const float scale = code_scale(col_stats[k]);
      qrow[k] = scale == 0.f ? int8_t{0} : quantize_value(static_cast<float>(row[k]), scale);
    }
  }
}

// out[r, k] = q[r, k] * stats[r] / 127 for rows [row_begin, row_end).
inline void dequantize_rows(const int8_t* q, const float* stats, int64_t K, int64_t row_begin, int64_t row_end,
                            float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float stat = stats[r];
    for (int64_t k = 0; k < K; ++k) out[r * K + k] = static_cast<float>(q[r * K + k]) * stat / 127.f;
  }
}

}  // namespace llmint8::cpu::kernels
