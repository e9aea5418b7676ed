// CPU kernels of int8_linear_matmul (+ .out), int8_mm_dequant and int8_scaled_mm.
#include "cpu/int8_gemm_cpu.h"
#include "cpu/kernels/int8_gemm.h"
#include "cpu/quantize_rowwise_cpu.h"
#include "op_checks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace llmint8::cpu {

namespace {

at::Tensor int8_linear_matmul_cpu(const at::Tensor& A, const at::Tensor& B) {
  op_checks::linear_matmul("int8_linear_matmul", A, B);
  const auto A2 = as_rows(A);
  const auto Bc = B.contiguous();
  auto out = at::empty(output_shape(A, B.size(0)), A.options().dtype(at::kInt));
  int8_matmul_into(A2, Bc, out.data_ptr<int32_t>());
  return out;
}

void int8_linear_matmul_out_cpu(const at::Tensor& A, const at::Tensor& B, at::Tensor& out) {
  op_checks::linear_matmul_out(A, B, out);
  if (out.is_contiguous()) {
    int8_matmul_into(as_rows(A), B.contiguous(), out.data_ptr<int32_t>());
  } else {
    out.copy_(int8_linear_matmul_cpu(A, B));
  }
}

at::Tensor int8_mm_dequant_cpu(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                               std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& bias) {
  op_checks::mm_dequant(A, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_mm_dequant", dtype, at::kHalf);
  const auto A2 = as_rows(A);
  const int64_t M = A2.size(0), N = A2.size(1);
  const auto rs = row_stats.contiguous(), cs = col_stats.contiguous(), b = bias_fp32(bias);
  auto out = at::empty(A.sizes(), A.options().dtype(out_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "int8_mm_dequant", [&] {
    const int32_t* acc = A2.const_data_ptr<int32_t>();
    const float* row = rs.const_data_ptr<float>();
    const float* col = cs.const_data_ptr<float>();
    const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        kernels::dequantize_row(acc + m * N, row[m], col, nullptr, bias_ptr, N, y + m * N);
      }
    });
  });
  return out;
}

at::Tensor int8_scaled_mm_cpu(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats,
                              const at::Tensor& col_stats, const std::optional<at::Tensor>& bias,
                              std::optional<at::ScalarType> dtype) {
  op_checks::scaled_mm(A, B, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_scaled_mm", dtype, at::kHalf);
  const auto A2 = as_rows(A);
  const auto Bc = B.contiguous();
  return int8_dequant_matmul(A2, Bc, row_stats.contiguous(), col_stats.contiguous(), at::Tensor(), at::Tensor(),
                             bias_fp32(bias), out_dtype)
      .view(output_shape(A, Bc.size(0)));
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, CPU, m) {
  m.impl("int8_linear_matmul", &int8_linear_matmul_cpu);
  m.impl("int8_linear_matmul.out", &int8_linear_matmul_out_cpu);
  m.impl("int8_mm_dequant", &int8_mm_dequant_cpu);
  m.impl("int8_scaled_mm", &int8_scaled_mm_cpu);
}

}  // namespace llmint8::cpu
