// Building blocks shared by the CPU quantization and layer ops.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>
#include <vector>

namespace llmint8::cpu {

// A [..., K] as a contiguous [rows, K] matrix (leading dims flattened).
at::Tensor as_rows(const at::Tensor& A);

// uint8 [K] mask of the columns where some row has |A| >= threshold. A2: [rows, K].
at::Tensor outlier_column_mask(const at::Tensor& A2, double threshold);

// Row-wise quantization of A2 [rows, K] leaving out the columns flagged in
// mask (undefined = no outliers): (CA int8 [rows, K], SCA fp32 [rows]).
std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& A2, const at::Tensor& mask);

// Shape [..., N] of an op's output on A [..., K].
std::vector<int64_t> output_shape(const at::Tensor& A, int64_t N);

// Optional bias as contiguous fp32, or an undefined tensor.
at::Tensor bias_fp32(const std::optional<at::Tensor>& bias);

}  // namespace llmint8::cpu
