// CPU kernels of the LLM.int8() forward: int8_mixed_scaled_mm and the layer op int8_linear.
#include "cpu/kernels/int8_gemm.h"
#include "cpu/quantize_rowwise_cpu.h"
#include "op_checks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace llmint8::cpu {

namespace {

// Y2 [rows, N] in A2's dtype = (CA2 @ CB^T) * SCA * SCB / 127^2
//   + (SCB / 127) * (A2[:, cols] @ CB[:, cols]^T) + bias, accumulated in fp32
// and rounded once. cols: int64 [n_out] (may be empty).
at::Tensor mixed_forward(const at::Tensor& A2, const at::Tensor& CA2, const at::Tensor& SCA, const at::Tensor& CB,
                         const at::Tensor& SCB, const at::Tensor& cols, const std::optional<at::Tensor>& bias) {
  const int64_t M = CA2.size(0), K = CA2.size(1), N = CB.size(0), n_out = cols.numel();
  const auto CBc = CB.contiguous();
  const auto sca = SCA.contiguous(), scb = SCB.contiguous();
  const auto b = bias_fp32(bias);
  // The outlier columns of A (exact, fp32) and of the weight (int8 codes, scaled per row below).
  const auto sub_a = A2.index_select(1, cols).to(at::kFloat).contiguous();  // [M, n_out]
  const auto sub_b = CBc.index_select(1, cols).contiguous();                 // [N, n_out]
  auto out = at::empty({M, N}, A2.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A2.scalar_type(), "int8_mixed_forward", [&] {
    const float* sx = sca.const_data_ptr<float>();
    const float* sw = scb.const_data_ptr<float>();
    const float* xa = sub_a.const_data_ptr<float>();
    const int8_t* wb = sub_b.const_data_ptr<int8_t>();
    const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, kernels::gemm_grain(M, K), [&](int64_t n0, int64_t n1) {
      kernels::int8_gemm(CA2.const_data_ptr<int8_t>(), CBc.const_data_ptr<int8_t>(), M, K, n0, n1,
                         [&](int64_t m, int64_t n, int32_t acc) {
                           float v = kernels::dequantize_product(acc, sx[m], sw[n]);
                           float outlier = 0.f;
                           for (int64_t j = 0; j < n_out; ++j) {
                             outlier += xa[m * n_out + j] * static_cast<float>(wb[n * n_out + j]);
                           }
                           v += outlier * (sw[n] / 127.f);
                           if (bias_ptr) v += bias_ptr[n];
                           y[m * N + n] = static_cast<scalar_t>(v);
                         });
    });
  });
  return out;
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
