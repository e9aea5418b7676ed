// C++ entry points of every llmint8 operator. Each call goes through the
// PyTorch dispatcher, so it reaches the CPU, CUDA, Meta or Autograd kernel
// that fits its arguments, exactly as torch.ops.llmint8.<name> does in Python.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <tuple>

namespace llmint8 {

// Largest K for which an int8 x int8 dot product cannot overflow int32:
// K * 127 * 127 <= 2^31 - 1.
constexpr int64_t kMaxInt8DotK = 133144;

// Row-wise absmax quantization of A [..., K]. Returns CA (int8, like A),
// SCA (fp32 [rows]) and, when threshold > 0, the sorted int64 indices of the
// outlier columns (|A| >= threshold in some row); those columns are 0 in CA
// and left out of SCA.
std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_vectorwise_quant(
    const at::Tensor& A, double threshold = 0.0);

// fp32 A[r, k] * stats[r] / 127.
at::Tensor int8_vectorwise_dequant(const at::Tensor& A, const at::Tensor& stats);

// int32 A[..., K] @ B[N, K]^T, exact for every K <= kMaxInt8DotK.
at::Tensor int8_linear_matmul(const at::Tensor& A, const at::Tensor& B);
void int8_linear_matmul_out(const at::Tensor& A, const at::Tensor& B, at::Tensor& out);

// A int32 [..., N] * row_stats[r] * col_stats[n] / 127^2 (+ bias), as dtype (default fp16).
at::Tensor int8_mm_dequant(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                           std::optional<at::ScalarType> dtype = std::nullopt,
                           const std::optional<at::Tensor>& bias = std::nullopt);

// int8_linear_matmul and int8_mm_dequant fused.
at::Tensor int8_scaled_mm(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats,
                          const at::Tensor& col_stats, const std::optional<at::Tensor>& bias = std::nullopt,
                          std::optional<at::ScalarType> dtype = std::nullopt);

// The threshold > 0 forward of LLM.int8(): int8 product of the quantized parts
// plus A[:, outlier_cols] @ dequant(CB[:, outlier_cols])^T in floating point.
// Returns (Y in A's dtype, A[:, outlier_cols] or nothing).
std::tuple<at::Tensor, std::optional<at::Tensor>> int8_mixed_scaled_mm(
    const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA,
    const at::Tensor& SCB, const std::optional<at::Tensor>& outlier_cols = std::nullopt,
    const std::optional<at::Tensor>& bias = std::nullopt);

// Row-wise and column-wise quantization in one call:
// (CA, CAt, row_stats, col_stats, outlier_cols).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_double_quant(
    const at::Tensor& A, double threshold = 0.0);

// The layer op of Linear8bitLt: Y = LLM.int8()(A, (CB, SCB)) + bias, in A's
// dtype. Differentiable in A and bias; `weight` (the float master weight of
// has_fp16_weights mode) is not read by the forward and receives dY^T A.
at::Tensor int8_linear(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                       const std::optional<at::Tensor>& bias = std::nullopt, double threshold = 0.0,
                       const std::optional<at::Tensor>& weight = std::nullopt);

}  // namespace llmint8
