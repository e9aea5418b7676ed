// Device-agnostic tensor helpers shared by the CPU and CUDA kernels' wrappers.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace llmint8 {

// A [..., K] as a contiguous [rows, K] matrix (leading dims flattened).
at::Tensor as_rows(const at::Tensor& A);

// Shape [..., N] of an op's output on A [..., K].
std::vector<int64_t> output_shape(const at::Tensor& A, int64_t N);

// Optional bias as contiguous fp32, or an undefined tensor.
at::Tensor bias_fp32(const std::optional<at::Tensor>& bias);

// Outlier columns as the public ops report them: the uint8 [K] mask the kernels take
// (undefined without outliers) and its sorted int64 indices (absent at threshold 0).
struct OutlierColumns {
  at::Tensor mask;
  std::optional<at::Tensor> cols;
};

// From a backend's mask; reads the data to size the indices (synchronizes on CUDA).
OutlierColumns outlier_columns(const at::Tensor& mask);

// outlier_cols values lie in [0, K) (reads the values: synchronizes on CUDA).
void check_outlier_cols_range(const char* op, const at::Tensor& cols, int64_t K);

}  // namespace llmint8
