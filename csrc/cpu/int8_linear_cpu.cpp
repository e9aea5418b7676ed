// CPU kernels of the LLM.int8() forward: int8_mixed_scaled_mm and the layer op int8_linear.
#include "cpu/int8_gemm_cpu.h"
#include "cpu/quantize_rowwise_cpu.h"
#include "op_checks.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace llmint8::cpu {

namespace {

// Y2 [rows, N] in A2's dtype = (CA2 @ CB^T) * SCA * SCB / 127^2
//   + (SCB / 127) * (A2[:, cols] @ CB[:, cols]^T) + bias, accumulated in fp32
// and rounded once. cols: int64 [n_out] (may be empty).
at::Tensor mixed_forward(const at::Tensor& A2, const at::Tensor& CA2, const at::Tensor& SCA, const at::Tensor& CB,
                         const at::Tensor& SCB, const at::Tensor& cols, const std::optional<at::Tensor>& bias) {
  // The outlier columns of A, exact in fp32, against the weight's int8 codes.
  const auto a_out = cols.numel() > 0 ? A2.index_select(1, cols).to(at::kFloat).contiguous() : at::Tensor();
  return int8_dequant_matmul(CA2, CB.contiguous(), SCA.contiguous(), SCB.contiguous(), a_out,
                             cols.numel() > 0 ? cols : at::Tensor(), bias_fp32(bias), A2.scalar_type());
}

std::tuple<at::Tensor, std::optional<at::Tensor>> int8_mixed_scaled_mm_cpu(
    const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA, const at::Tensor& SCB,
    const std::optional<at::Tensor>& outlier_cols, const std::optional<at::Tensor>& bias) {
  op_checks::mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols, bias);
  const int64_t K = A.size(-1);
  const auto A2 = as_rows(A);
  const auto cols = outlier_cols.has_value() ? outlier_cols->contiguous() : at::empty({0}, A.options().dtype(at::kLong));
  check_outlier_cols_range("int8_mixed_scaled_mm", cols, K);
  auto Y = mixed_forward(A2, as_rows(CA), SCA, CB, SCB, cols, bias).view(output_shape(A, CB.size(0)));
  std::optional<at::Tensor> sub_a;
  if (outlier_cols.has_value()) sub_a = A2.index_select(1, cols);
  return {Y, sub_a};
}

at::Tensor int8_linear_cpu(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                           const std::optional<at::Tensor>& bias, double threshold,
                           const std::optional<at::Tensor>& weight) {
  op_checks::int8_linear(A, CB, SCB, bias, threshold, weight);
  const auto A2 = as_rows(A);
  const auto outliers = threshold > 0.0 ? outlier_columns(outlier_column_mask(A2, threshold)) : OutlierColumns{};
  auto [CA2, SCA] = quantize_rows(A2, outliers.mask);
  const auto cols = outliers.cols.value_or(at::empty({0}, A.options().dtype(at::kLong)));
  return mixed_forward(A2, CA2, SCA, CB, SCB, cols, bias).view(output_shape(A, CB.size(0)));
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, CPU, m) {
  m.impl("int8_mixed_scaled_mm", &int8_mixed_scaled_mm_cpu);
  m.impl("int8_linear", &int8_linear_cpu);
}

}  // namespace llmint8::cpu
