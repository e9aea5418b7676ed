// AVX-512 versions of mark_outlier_columns and quantize_row (quantize_rowwise.h) for fp32,
// bf16 and fp16 rows, bit for bit the same results: the scalar loops call libm's rint per
// element on baseline x86-64 and cost as much as oneDNN's int8 GEMM at M = 16. They live in
// quantize_rowwise_avx512.cpp, compiled with AVX-512 target attributes on those functions
// alone; callers ask quantize_avx512_supported() first.
#pragma once

#include <cstdint>

namespace llmint8::cpu::kernels {

// How a row's elements are stored: fp32, or the 16 bits of a bf16 / IEEE fp16 value.
enum class RowFormat { kFloat32, kBFloat16, kFloat16 };

// Whether this CPU and OS run the functions below (AVX512-F/BW/VL).
bool quantize_avx512_supported();

// As mark_outlier_columns: is_outlier[k] = 1 when |a[r, k]| >= threshold for some row r,
// else 0. a: [rows, K] in `format`.
void mark_outlier_columns_avx512(RowFormat format, const void* a, int64_t rows, int64_t K, float threshold,
                                 uint8_t* is_outlier);

// As quantize_row: q [K] from one row a [K] in `format`, leaving out the columns flagged in
// is_outlier (may be null); returns the row's stat.
float quantize_row_avx512(RowFormat format, const void* a, int64_t K, const uint8_t* is_outlier, int8_t* q);

}  // namespace llmint8::cpu::kernels
