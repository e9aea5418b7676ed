// CPU kernels of int8_linear_matmul (+ .out), int8_mm_dequant and int8_scaled_mm.
#include "cpu/kernels/int8_gemm.h"
#include "cpu/quantize_rowwise_cpu.h"
#include "op_checks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace llmint8::cpu {

namespace {

void matmul_into(const at::Tensor& A2, const at::Tensor& B, int32_t* out) {
  const int64_t M = A2.size(0), K = A2.size(1), N = B.size(0);
  const int8_t* a = A2.const_data_ptr<int8_t>();
  const int8_t* b = B.const_data_ptr<int8_t>();
  at::parallel_for(0, N, kernels::gemm_grain(M, K), [&](int64_t n0, int64_t n1) {
    kernels::int8_gemm(a, b, M, K, n0, n1, [&](int64_t m, int64_t n, int32_t acc) { out[m * N + n] = acc; });
  });
}

at::Tensor int8_linear_matmul_cpu(const at::Tensor& A, const at::Tensor& B) {
  op_checks::linear_matmul("int8_linear_matmul", A, B);
  const auto A2 = as_rows(A);
  const auto Bc = B.contiguous();
  auto out = at::empty(output_shape(A, B.size(0)), A.options().dtype(at::kInt));
  matmul_into(A2, Bc, out.data_ptr<int32_t>());
  return out;
}

void int8_linear_matmul_out_cpu(const at::Tensor& A, const at::Tensor& B, at::Tensor& out) {
  op_checks::linear_matmul_out(A, B, out);
  if (out.is_contiguous()) {
    matmul_into(as_rows(A), B.contiguous(), out.data_ptr<int32_t>());
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
        for (int64_t n = 0; n < N; ++n) {
          float v = kernels::dequantize_product(acc[m * N + n], row[m], col[n]);
          if (bias_ptr) v += bias_ptr[n];
          y[m * N + n] = static_cast<scalar_t>(v);
        }
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
  const int64_t M = A2.size(0), K = A2.size(1), N = Bc.size(0);
  const auto rs = row_stats.contiguous(), cs = col_stats.contiguous(), b = bias_fp32(bias);
  auto out = at::empty(output_shape(A, N), A.options().dtype(out_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "int8_scaled_mm", [&] {
    const float* row = rs.const_data_ptr<float>();
    const float* col = cs.const_data_ptr<float>();
    const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, kernels::gemm_grain(M, K), [&](int64_t n0, int64_t n1) {
      kernels::int8_gemm(A2.const_data_ptr<int8_t>(), Bc.const_data_ptr<int8_t>(), M, K, n0, n1,
                         [&](int64_t m, int64_t n, int32_t acc) {
                           float v = kernels::dequantize_product(acc, row[m], col[n]);
                           if (bias_ptr) v += bias_ptr[n];
                           y[m * N + n] = static_cast<scalar_t>(v);
                         });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, CPU, m) {
  m.impl("int8_linear_matmul", &int8_linear_matmul_cpu);
  m.impl("int8_linear_matmul.out", &int8_linear_matmul_out_cpu);
  m.impl("int8_mm_dequant", &int8_mm_dequant_cpu);
  m.impl("int8_scaled_mm", &int8_scaled_mm_cpu);
}

}  // namespace llmint8::cpu
