// Meta kernels: output shapes and dtypes from symbolic input shapes, for
// torch.compile, export and FakeTensor. The two ops whose output size depends
// on the data (outlier_cols) have their fake kernels in python/llmint8/_fake.py.
#include "op_checks.h"

#include <llmint8/checks.h>

#include <ATen/ATen.h>
#include <torch/library.h>

namespace llmint8::meta {

namespace {

// Shape [..., N] of an op's output on A [..., K].
std::vector<c10::SymInt> output_shape(const at::Tensor& A, const c10::SymInt& N) {
  auto shape = A.sym_sizes().vec();
  shape.back() = N;
  return shape;
}

at::Tensor int8_vectorwise_dequant_meta(const at::Tensor& A, const at::Tensor& stats) {
  op_checks::vectorwise_dequant(A, stats);
  return at::empty_symint(A.sym_sizes(), A.options().dtype(at::kFloat));
}

at::Tensor int8_linear_matmul_meta(const at::Tensor& A, const at::Tensor& B) {
  op_checks::linear_matmul("int8_linear_matmul", A, B);
  return at::empty_symint(output_shape(A, B.sym_size(0)), A.options().dtype(at::kInt));
}

void int8_linear_matmul_out_meta(const at::Tensor& A, const at::Tensor& B, at::Tensor& out) {
  op_checks::linear_matmul_out(A, B, out);
}

at::Tensor int8_mm_dequant_meta(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                                std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& bias) {
  op_checks::mm_dequant(A, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_mm_dequant", dtype, at::kHalf);
  return at::empty_symint(A.sym_sizes(), A.options().dtype(out_dtype));
}

at::Tensor int8_scaled_mm_meta(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats,
                               const at::Tensor& col_stats, const std::optional<at::Tensor>& bias,
                               std::optional<at::ScalarType> dtype) {
  op_checks::scaled_mm(A, B, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_scaled_mm", dtype, at::kHalf);
  return at::empty_symint(output_shape(A, B.sym_size(0)), A.options().dtype(out_dtype));
}

std::tuple<at::Tensor, std::optional<at::Tensor>> int8_mixed_scaled_mm_meta(
    const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA, const at::Tensor& SCB,
    const std::optional<at::Tensor>& outlier_cols, const std::optional<at::Tensor>& bias) {
  op_checks::mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols, bias);
  auto Y = at::empty_symint(output_shape(A, CB.sym_size(0)), A.options());
  std::optional<at::Tensor> sub_a;
  if (outlier_cols.has_value()) {
    const std::vector<c10::SymInt> shape{checks::rows_of(A), outlier_cols->sym_size(0)};
    sub_a = at::empty_symint(shape, A.options());
  }
  return {Y, sub_a};
}

at::Tensor int8_linear_meta(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                            const std::optional<at::Tensor>& bias, double threshold,
                            const std::optional<at::Tensor>& weight) {
  op_checks::int8_linear(A, CB, SCB, bias, threshold, weight);
  return at::empty_symint(output_shape(A, CB.sym_size(0)), A.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, Meta, m) {
  m.impl("int8_vectorwise_dequant", &int8_vectorwise_dequant_meta);
  m.impl("int8_linear_matmul", &int8_linear_matmul_meta);
  m.impl("int8_linear_matmul.out", &int8_linear_matmul_out_meta);
  m.impl("int8_mm_dequant", &int8_mm_dequant_meta);
  m.impl("int8_scaled_mm", &int8_scaled_mm_meta);
  m.impl("int8_mixed_scaled_mm", &int8_mixed_scaled_mm_meta);
  m.impl("int8_linear", &int8_linear_meta);
}

}  // namespace llmint8::meta
