// Argument validation of each operator, shared by its CPU, CUDA and Meta
// kernels so that every backend rejects bad input with the same message.
// Works on symbolic sizes, so Meta kernels can call it under torch.compile.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace llmint8::op_checks {

void vectorwise_quant(const char* op, const at::Tensor& A, double threshold);
void vectorwise_dequant(const at::Tensor& A, const at::Tensor& stats);
void linear_matmul(const char* op, const at::Tensor& A, const at::Tensor& B);
void linear_matmul_out(const at::Tensor& A, const at::Tensor& B, const at::Tensor& out);
void mm_dequant(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                const std::optional<at::Tensor>& bias);
void scaled_mm(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats, const at::Tensor& col_stats,
               const std::optional<at::Tensor>& bias);
// CB int8 [N, K] and SCB fp32 [N] matching A [..., K].
void weight(const char* op, const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB);
void mixed_scaled_mm(const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA,
                     const at::Tensor& SCB, const std::optional<at::Tensor>& outlier_cols,
                     const std::optional<at::Tensor>& bias);
void int8_linear(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                 const std::optional<at::Tensor>& bias, double threshold, const std::optional<at::Tensor>& weight);

// dtype argument of the dequantizing ops: fp16, bf16 or fp32, `fallback` when absent.
at::ScalarType output_dtype(const char* op, std::optional<at::ScalarType> dtype, at::ScalarType fallback);

}  // namespace llmint8::op_checks
