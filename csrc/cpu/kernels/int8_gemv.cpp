// The variants of int8_gemv_s8s8_s32 (see int8_gemv.h). The VNNI ones carry their ISA as
// a function target attribute, so the rest of the library keeps the baseline ISA and
// loads on any x86-64 CPU; best_gemv_isa() asks the CPU (and the OS, for the AVX-512
// register state) before one of them is called.
//
// vpdpbusd multiplies unsigned bytes by signed bytes. The weights are made unsigned by
// flipping their sign bit (w ^ 0x80 = w + 128), so each dot product gains
// 128 * sum(x), which is subtracted at the end. Accumulators wrap modulo 2^32; the exact
// result fits int32 (K <= 133,144), so the wrapped arithmetic lands on it exactly.
#include "cpu/kernels/int8_gemv.h"

#include "cpu/kernels/int8_gemm.h"

#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LLMINT8_GEMV_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace llmint8::cpu::kernels {

namespace {

void gemv_plain(const int8_t* A, int64_t M, const int8_t* B, int64_t K, int64_t n_begin, int64_t n_end, int32_t* C,
                int64_t ldc) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t m = 0; m < M; ++m) C[m * ldc + (n - n_begin)] = dot_s8s8_s32(A + m * K, B + n * K, K);
  }
}

// 128 * sum of x[0, K) modulo 2^32: the bias the flipped weights add to a dot product.
uint32_t flip_bias(const int8_t* x, int64_t K) {
  uint32_t sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += static_cast<uint32_t>(static_cast<int32_t>(x[k]));
  return sum * 128u;
}

#ifdef LLMINT8_GEMV_X86

// ---- AVX512-VNNI: 64 bytes of K per instruction; the K tail by masked loads ----------

#define LLMINT8_TARGET_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

// Through memory: the shuffle intrinsics trip GCC 12's -Wuninitialized; this runs once per output.
LLMINT8_TARGET_AVX512VNNI inline uint32_t hsum_512(__m512i v) {
  alignas(64) uint32_t lanes[16];
  _mm512_store_si512(lanes, v);
  uint32_t sum = 0;
  for (uint32_t lane : lanes) sum += lane;
  return sum;
}

// R consecutive weight rows B[0..R) against the M activation rows; C[m * ldc + r].
// M * R accumulators, M activation vectors and one weight vector stay in registers.
template <int M, int R>
LLMINT8_TARGET_AVX512VNNI void block_avx512(const int8_t* A, const int8_t* B, int64_t K, const uint32_t* bias,
                                            int32_t* C, int64_t ldc) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc[R][M];
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_si512();
  }
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    __m512i x[M];
    for (int m = 0; m < M; ++m) x[m] = _mm512_loadu_si512(A + m * K + k);
    for (int r = 0; r < R; ++r) {
      const __m512i w = _mm512_xor_si512(_mm512_loadu_si512(B + r * K + k), flip);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_dpbusd_epi32(acc[r][m], w, x[m]);
    }
  }
  if (k < K) {
    // Masked-off bytes load as 0: the flipped weight byte is then 128, times an x byte of 0.
    const __mmask64 tail = _cvtu64_mask64(~uint64_t{0} >> (64 - (K - k)));
    __m512i x[M];
    for (int m = 0; m < M; ++m) x[m] = _mm512_maskz_loadu_epi8(tail, A + m * K + k);
    for (int r = 0; r < R; ++r) {
      const __m512i w = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, B + r * K + k), flip);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_dpbusd_epi32(acc[r][m], w, x[m]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) C[m * ldc + r] = static_cast<int32_t>(hsum_512(acc[r][m]) - bias[m]);
  }
}

template <int M, int R>
LLMINT8_TARGET_AVX512VNNI void gemv_avx512(const int8_t* A, const int8_t* B, int64_t K, int64_t n_begin,
                                           int64_t n_end, int32_t* C, int64_t ldc) {
  uint32_t bias[M];
  for (int m = 0; m < M; ++m) bias[m] = flip_bias(A + m * K, K);
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) block_avx512<M, R>(A, B + n * K, K, bias, C + (n - n_begin), ldc);
  for (; n < n_end; ++n) block_avx512<M, 1>(A, B + n * K, K, bias, C + (n - n_begin), ldc);
}

// ---- AVX-VNNI: 32 bytes of K per instruction; the K tail in scalar code ---------------

#define LLMINT8_TARGET_AVXVNNI __attribute__((target("avx2,avxvnni")))

LLMINT8_TARGET_AVXVNNI inline uint32_t hsum_256(__m256i v) {
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(t));
}

// As block_avx512 over the first K_vec (a multiple of 32) bytes; the rest exactly in scalar.
template <int M, int R>
LLMINT8_TARGET_AVXVNNI void block_avx(const int8_t* A, const int8_t* B, int64_t K, int64_t K_vec,
                                      const uint32_t* bias, int32_t* C, int64_t ldc) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256i acc[R][M];
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) acc[r][m] = _mm256_setzero_si256();
  }
  for (int64_t k = 0; k < K_vec; k += 32) {
    __m256i x[M];
    for (int m = 0; m < M; ++m) x[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(A + m * K + k));
    for (int r = 0; r < R; ++r) {
      const __m256i w =
          _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + r * K + k)), flip);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm256_dpbusd_avx_epi32(acc[r][m], w, x[m]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < M; ++m) {
      uint32_t tail = 0;
      for (int64_t k = K_vec; k < K; ++k) {
        tail += static_cast<uint32_t>(int32_t{A[m * K + k]} * int32_t{B[r * K + k]});
      }
      C[m * ldc + r] = static_cast<int32_t>(hsum_256(acc[r][m]) - bias[m] + tail);
    }
  }
}

template <int M, int R>
LLMINT8_TARGET_AVXVNNI void gemv_avx(const int8_t* A, const int8_t* B, int64_t K, int64_t n_begin, int64_t n_end,
                                     int32_t* C, int64_t ldc) {
  const int64_t K_vec = K - K % 32;
  uint32_t bias[M];
  for (int m = 0; m < M; ++m) bias[m] = flip_bias(A + m * K, K_vec);
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) block_avx<M, R>(A, B + n * K, K, K_vec, bias, C + (n - n_begin), ldc);
  for (; n < n_end; ++n) block_avx<M, 1>(A, B + n * K, K, K_vec, bias, C + (n - n_begin), ldc);
}

// libgcc's and compiler-rt's checks include the OS enabling the AVX/AVX-512 register state (XCR0).
bool has_avx512_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
}

// Not implied by AVX512-VNNI: Ice Lake and Zen 4 have only the EVEX form. Read from CPUID leaf 7,
// subleaf 1, EAX bit 4 (clang 14's __builtin_cpu_supports does not know "avxvnni"); the AVX2 check
// covers the OS enabling the YMM state.
bool has_avx_vnni() {
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return ((eax >> 4) & 1u) != 0 && __builtin_cpu_supports("avx2");
}

#else

bool has_avx512_vnni() { return false; }
bool has_avx_vnni() { return false; }

#endif  // LLMINT8_GEMV_X86

}  // namespace

GemvIsa best_gemv_isa() {
  static const GemvIsa isa = has_avx512_vnni() ? GemvIsa::kAvx512Vnni
                             : has_avx_vnni()  ? GemvIsa::kAvxVnni
                                               : GemvIsa::kPlain;
  return isa;
}

bool gemv_isa_supported(GemvIsa isa) {
  switch (isa) {
    case GemvIsa::kPlain:
      return true;
    case GemvIsa::kAvxVnni:
      return has_avx_vnni();
    case GemvIsa::kAvx512Vnni:
      return has_avx512_vnni();
  }
  return false;
}

const char* gemv_isa_name(GemvIsa isa) {
  switch (isa) {
    case GemvIsa::kPlain:
      return "plain";
    case GemvIsa::kAvxVnni:
      return "avx_vnni";
    case GemvIsa::kAvx512Vnni:
      return "avx512_vnni";
  }
  return "unknown";
}

void int8_gemv_s8s8_s32(GemvIsa isa, const int8_t* A, int64_t M, const int8_t* B, int64_t K, int64_t n_begin,
                        int64_t n_end, int32_t* C, int64_t ldc) {
#ifdef LLMINT8_GEMV_X86
  if (isa == GemvIsa::kAvx512Vnni) {
    switch (M) {
      case 1: return gemv_avx512<1, 8>(A, B, K, n_begin, n_end, C, ldc);
      case 2: return gemv_avx512<2, 8>(A, B, K, n_begin, n_end, C, ldc);
      case 3: return gemv_avx512<3, 4>(A, B, K, n_begin, n_end, C, ldc);
      case 4: return gemv_avx512<4, 4>(A, B, K, n_begin, n_end, C, ldc);
      default: break;
    }
  } else if (isa == GemvIsa::kAvxVnni) {
    switch (M) {
      case 1: return gemv_avx<1, 4>(A, B, K, n_begin, n_end, C, ldc);
      case 2: return gemv_avx<2, 4>(A, B, K, n_begin, n_end, C, ldc);
      case 3: return gemv_avx<3, 2>(A, B, K, n_begin, n_end, C, ldc);
      case 4: return gemv_avx<4, 2>(A, B, K, n_begin, n_end, C, ldc);
      default: break;
    }
  }
#endif
  gemv_plain(A, M, B, K, n_begin, n_end, C, ldc);
}

}  // namespace llmint8::cpu::kernels
