// The CPU int8 x int8 -> int32 product behind every CPU op, chosen by the number of
// activation rows M:
//   M <= 4 (decode): our GEMV (cpu/kernels/int8_gemv.h, VNNI where the CPU has it), which
//     streams the weights once and dequantizes each tile of outputs while it is in L1;
//   M > 4: oneDNN's s8s8s32 GEMM through ATen's _int_mm (PyTorch ships oneDNN inside
//     libtorch_cpu without exporting its API, so ATen is the way in), then one parallel
//     epilogue pass over the int32 product;
//   our portable loops where the CPU lacks VNNI or torch lacks oneDNN: without VNNI
//     oneDNN's int8 GEMM may saturate 16-bit intermediates (its documented "int8
//     computation nuances"), and these ops promise exact int32 products.
// Threads: at::parallel_for and oneDNN both use torch's intra-op pool (at::get_num_threads()).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace llmint8::cpu {

enum class Int8GemmPath { kGemv, kOneDnn, kPortable };

// The path a product with M activation rows takes on this machine.
Int8GemmPath int8_gemm_path(int64_t M);

// out[m * N + n] = A2[m, :] . B[n, :], exact in int32. A2: [M, K] int8, B: [N, K] int8,
// both contiguous; out: M * N int32.
void int8_matmul_into(const at::Tensor& A2, const at::Tensor& B, int32_t* out);

// Y [M, N] in `dtype`, computed in fp32 and rounded once:
//   (A2 @ B^T)[m, n] * row_stats[m] * col_stats[n] / 127^2
//   + (A_out @ B[:, cols]^T)[m, n] * col_stats[n] / 127      (outlier columns, in float)
//   + bias[n].
// A2: [M, K] int8, B: [N, K] int8 (contiguous); row_stats fp32 [M], col_stats fp32 [N];
// A_out: fp32 [M, n_out] contiguous and cols: int64 [n_out] with values in [0, K), or both
// undefined (no outlier term); bias: fp32 [N] contiguous or undefined.
at::Tensor int8_dequant_matmul(const at::Tensor& A2, const at::Tensor& B, const at::Tensor& row_stats,
                               const at::Tensor& col_stats, const at::Tensor& A_out, const at::Tensor& cols,
                               const at::Tensor& bias, at::ScalarType dtype);

}  // namespace llmint8::cpu
