// Torch-free int8 x int8 -> int32 GEMM on the CPU with a fused epilogue.
#pragma once

#include <algorithm>
#include <cstdint>

namespace llmint8::cpu::kernels {

// 1 / 127^2: the two absmax scales of a dequantized int8 product.
constexpr float kInv127Squared = 1.f / (127.f * 127.f);

// Weight rows per parallel task: enough multiply-adds (about 32K) to pay for a thread.
inline int64_t gemm_grain(int64_t M, int64_t K) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, M * K)); }

// Exact int32 dot product of two int8 vectors (the caller guarantees
// K <= 133,144, so no partial sum can overflow).
inline int32_t dot_s8s8_s32(const int8_t* a, const int8_t* b, int64_t K) {
  int32_t acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
  return acc;
}

// For every m in [0, M) and n in [n_begin, n_end): store(m, n, A[m, :] . B[n, :]).
// A: [M, K] int8, B: [N, K] int8, row-major. Weight rows are walked in blocks
// that stay in cache while every row of A passes over them.
template <typename Store>
void int8_gemm(const int8_t* A, const int8_t* B, int64_t M, int64_t K, int64_t n_begin, int64_t n_end,
               Store&& store) {
  const int64_t block = std::max<int64_t>(1, (256 * 1024) / std::max<int64_t>(K, 1));
  for (int64_t n0 = n_begin; n0 < n_end; n0 += block) {
    const int64_t n1 = std::min(n_end, n0 + block);
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* a = A + m * K;  // 64-bit offsets: M * K may pass 2^31
      for (int64_t n = n0; n < n1; ++n) store(m, n, dot_s8s8_s32(a, B + n * K, K));
    }
  }
}

}  // namespace llmint8::cpu::kernels

namespace llmint8::cpu::kernels {

// acc * row_stat * col_stat / 127^2: an int32 product back to real units.
inline float dequantize_product(int32_t acc, float row_stat, float col_stat) {
  return static_cast<float>(acc) * (row_stat * col_stat * kInv127Squared);
}

// One output row segment of the LLM.int8() epilogue, in fp32 with one rounding to T:
// y[n] = dequantize_product(acc[n], row_stat, col_stats[n]) + outlier[n] * col_stats[n] / 127
// + bias[n], for n in [0, N). outlier (the float product of the outlier columns with the
// weight's int8 codes) and bias may be null.
template <typename T>
void dequantize_row(const int32_t* acc, float row_stat, const float* col_stats, const float* outlier,
                    const float* bias, int64_t N, T* y) {
  for (int64_t n = 0; n < N; ++n) {
    float v = dequantize_product(acc[n], row_stat, col_stats[n]);
    if (outlier != nullptr) v += outlier[n] * (col_stats[n] / 127.f);
    if (bias != nullptr) v += bias[n];
    y[n] = static_cast<T>(v);
  }
}

// w[j * ld + i] = B[n_begin + i, cols[j]] as float, for i < len and j < n_out: the weight codes
// of the outlier columns for a tile of weight rows. B: [N, K] int8.
inline void gather_outlier_weights(const int8_t* B, int64_t K, const int64_t* cols, int64_t n_out, int64_t n_begin,
                                   int64_t len, float* w, int64_t ld) {
  for (int64_t i = 0; i < len; ++i) {
    const int8_t* row = B + (n_begin + i) * K;  // 64-bit offsets: N * K may pass 2^31
    for (int64_t j = 0; j < n_out; ++j) w[j * ld + i] = static_cast<float>(row[cols[j]]);
  }
}

// out[i] = sum over j = 0, 1, ... of a_out[j] * w[j * ld + i], for i < len: one activation row's
// outlier columns against a gathered tile. The fixed order keeps results identical for any
// row count, tiling and thread count.
inline void outlier_row(const float* a_out, const float* w, int64_t n_out, int64_t len, int64_t ld, float* out) {
  for (int64_t i = 0; i < len; ++i) out[i] = 0.f;
  for (int64_t j = 0; j < n_out; ++j) {
    const float a = a_out[j];
    const float* wj = w + j * ld;
    for (int64_t i = 0; i < len; ++i) out[i] += a * wj[i];
  }
}

}  // namespace llmint8::cpu::kernels
