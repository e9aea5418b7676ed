// Torch-free int8 x int8 -> int32 GEMV for a few activation rows (decode) on the CPU.
// Bound by reading the int8 weights once, so its x86 variants use VNNI (vpdpbusd: 64
// multiply-adds per instruction) to keep up with memory; the variant is chosen at run time
// because the library must also run on CPUs without VNNI. Variants live in int8_gemv.cpp,
// the only file compiled with VNNI target attributes (on those functions alone).
#pragma once

#include <cstdint>

namespace llmint8::cpu::kernels {

// Most activation rows one GEMV call takes: their accumulators for a block of weight rows
// must stay in vector registers.
constexpr int64_t kGemvMaxRows = 4;

enum class GemvIsa {
  kPlain,       // portable C++ (any CPU)
  kAvxVnni,     // 256-bit VEX vpdpbusd (AVX-VNNI: Alder Lake and later, Zen 5)
  kAvx512Vnni,  // 512-bit vpdpbusd with AVX512-BW masked loads (Cascade Lake and later, Zen 4/5)
};

// The fastest variant this CPU and OS run (detected once).
GemvIsa best_gemv_isa();
// Whether `isa` runs on this CPU and OS.
bool gemv_isa_supported(GemvIsa isa);
const char* gemv_isa_name(GemvIsa isa);

// C[m * ldc + (n - n_begin)] = A[m, :] . B[n, :], exact in int32, for m in [0, M) and
// n in [n_begin, n_end). A: [M, K] int8 with 1 <= M <= kGemvMaxRows, B: [N, K] int8, both
// row-major. Exact for any int8 values (-128 included) as long as the partial sums fit int32,
// which K <= 133,144 guarantees for codes in [-127, 127]. `isa` must be supported
// (gemv_isa_supported).
void int8_gemv_s8s8_s32(GemvIsa isa, const int8_t* A, int64_t M, const int8_t* B, int64_t K, int64_t n_begin,
                        int64_t n_end, int32_t* C, int64_t ldc);

}  // namespace llmint8::cpu::kernels
