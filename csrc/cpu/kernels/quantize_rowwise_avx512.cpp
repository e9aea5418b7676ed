// AVX-512 row quantization (see quantize_rowwise_avx512.h): 16 elements per step, the K
// tail through masked loads and stores. Codes follow the scalar recipe exactly: x * scale
// in fp32, rounded half to even, clamped to [-127, 127]; the stat is the absmax of the
// kept columns, NaN when any kept element is NaN.
#include "cpu/kernels/quantize_rowwise_avx512.h"

#include "cpu/kernels/quantize_rowwise.h"

#include <algorithm>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LLMINT8_QUANT_X86 1
#include <immintrin.h>
#endif

namespace llmint8::cpu::kernels {

#ifdef LLMINT8_QUANT_X86

namespace {

#define LLMINT8_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

LLMINT8_TARGET_AVX512 inline __mmask16 lanes(int64_t remaining) {
  return remaining >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << remaining) - 1u);
}

// 16 elements from k on as fp32 (exact for every format); masked-off lanes are 0.
template <RowFormat F>
LLMINT8_TARGET_AVX512 inline __m512 load16(const void* a, int64_t k, __mmask16 live) {
  if constexpr (F == RowFormat::kFloat32) {
    return _mm512_maskz_loadu_ps(live, static_cast<const float*>(a) + k);
  } else {
    const __m256i bits = _mm256_maskz_loadu_epi16(live, static_cast<const uint16_t*>(a) + k);
    if constexpr (F == RowFormat::kBFloat16) {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
    } else {
      return _mm512_cvtph_ps(bits);
    }
  }
}

// Lanes of is_outlier[k, k + 16) that are set (none when is_outlier is null).
LLMINT8_TARGET_AVX512 inline __mmask16 outlier_lanes(const uint8_t* is_outlier, int64_t k, __mmask16 live) {
  if (is_outlier == nullptr) return 0;
  const __m128i flags = _mm_maskz_loadu_epi8(live, is_outlier + k);
  return _mm_test_epi8_mask(flags, flags);
}

template <RowFormat F>
LLMINT8_TARGET_AVX512 void mark_outliers(const void* a, int64_t rows, int64_t K, float threshold,
                                         uint8_t* is_outlier) {
  if (K == 0) return;  // an empty mask may have no storage (memset of null is undefined)
  std::memset(is_outlier, 0, static_cast<size_t>(K));
  const __m512 t = _mm512_set1_ps(threshold);
  const __m128i ones = _mm_set1_epi8(1);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = r * K;  // 64-bit offsets: rows * K may pass 2^31
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 live = lanes(K - k);
      const __m512 v = _mm512_abs_ps(load16<F>(a, row + k, live));
      // Ordered compare: NaN is never an outlier, as in the scalar loop.
      const __mmask16 hit = _mm512_mask_cmp_ps_mask(live, v, t, _CMP_GE_OQ);
      if (hit) _mm_mask_storeu_epi8(is_outlier + k, hit, ones);
    }
  }
}

template <RowFormat F>
LLMINT8_TARGET_AVX512 float quantize(const void* a, int64_t K, const uint8_t* is_outlier, int8_t* q) {
  __m512 vmax = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 live = lanes(K - k);
    const __mmask16 keep = live & static_cast<__mmask16>(~outlier_lanes(is_outlier, k, live));
    const __m512 v = _mm512_abs_ps(load16<F>(a, k, live));
    nan |= _mm512_mask_cmp_ps_mask(keep, v, v, _CMP_UNORD_Q);
    vmax = _mm512_mask_max_ps(vmax, keep, vmax, v);
  }
  alignas(64) float part[16];
  _mm512_store_ps(part, vmax);
  const float stat = nan ? std::numeric_limits<float>::quiet_NaN() : *std::max_element(part, part + 16);

  const float scale = code_scale(stat);
  if (scale == 0.f) {
    if (K > 0) std::memset(q, 0, static_cast<size_t>(K));  // K == 0: q may be null
    return stat;
  }
  const __m512 s = _mm512_set1_ps(scale);
  const __m512i hi = _mm512_set1_epi32(127), lo = _mm512_set1_epi32(-127);
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 live = lanes(K - k);
    const __mmask16 keep = live & static_cast<__mmask16>(~outlier_lanes(is_outlier, k, live));
    const __m512 x = _mm512_mul_ps(load16<F>(a, k, live), s);
    __m512i c = _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    c = _mm512_max_epi32(_mm512_min_epi32(c, hi), lo);
    _mm_mask_storeu_epi8(q + k, live, _mm512_maskz_cvtsepi32_epi8(keep, c));
  }
  return stat;
}

}  // namespace

bool quantize_avx512_supported() {
  static const bool ok = [] {
    __builtin_cpu_init();  // the check includes the OS enabling the AVX-512 state (XCR0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return ok;
}

void mark_outlier_columns_avx512(RowFormat format, const void* a, int64_t rows, int64_t K, float threshold,
                                 uint8_t* is_outlier) {
  switch (format) {
    case RowFormat::kFloat32: return mark_outliers<RowFormat::kFloat32>(a, rows, K, threshold, is_outlier);
    case RowFormat::kBFloat16: return mark_outliers<RowFormat::kBFloat16>(a, rows, K, threshold, is_outlier);
    case RowFormat::kFloat16: return mark_outliers<RowFormat::kFloat16>(a, rows, K, threshold, is_outlier);
  }
}

float quantize_row_avx512(RowFormat format, const void* a, int64_t K, const uint8_t* is_outlier, int8_t* q) {
  switch (format) {
    case RowFormat::kFloat32: return quantize<RowFormat::kFloat32>(a, K, is_outlier, q);
    case RowFormat::kBFloat16: return quantize<RowFormat::kBFloat16>(a, K, is_outlier, q);
    case RowFormat::kFloat16: return quantize<RowFormat::kFloat16>(a, K, is_outlier, q);
  }
  return 0.f;
}

#else

bool quantize_avx512_supported() { return false; }

// Never called where quantize_avx512_supported() is false; defined so that the library links.
void mark_outlier_columns_avx512(RowFormat, const void*, int64_t, int64_t, float, uint8_t*) {}
float quantize_row_avx512(RowFormat, const void*, int64_t, const uint8_t*, int8_t*) { return 0.f; }

#endif  // LLMINT8_QUANT_X86

}  // namespace llmint8::cpu::kernels
