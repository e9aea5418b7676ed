// C++ entry points: each forwards to the dispatcher, which picks the kernel.
#include <llmint8/ops.h>

#include <ATen/core/dispatch/Dispatcher.h>

namespace llmint8 {

namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name, const char* overload = "") {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload).typed<Signature>();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_vectorwise_quant(const at::Tensor& A,
                                                                                       double threshold) {
  static auto op = find_op<decltype(int8_vectorwise_quant)>("llmint8::int8_vectorwise_quant");
  return op.call(A, threshold);
}

at::Tensor int8_vectorwise_dequant(const at::Tensor& A, const at::Tensor& stats) {
  static auto op = find_op<decltype(int8_vectorwise_dequant)>("llmint8::int8_vectorwise_dequant");
  return op.call(A, stats);
}

at::Tensor int8_linear_matmul(const at::Tensor& A, const at::Tensor& B) {
  static auto op = find_op<decltype(int8_linear_matmul)>("llmint8::int8_linear_matmul");
  return op.call(A, B);
}

void int8_linear_matmul_out(const at::Tensor& A, const at::Tensor& B, at::Tensor& out) {
  static auto op = find_op<void(const at::Tensor&, const at::Tensor&, at::Tensor&)>("llmint8::int8_linear_matmul", "out");
  op.call(A, B, out);
}

at::Tensor int8_mm_dequant(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                           std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& bias) {
  static auto op = find_op<decltype(int8_mm_dequant)>("llmint8::int8_mm_dequant");
  return op.call(A, row_stats, col_stats, dtype, bias);
}

at::Tensor int8_scaled_mm(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats,
                          const at::Tensor& col_stats, const std::optional<at::Tensor>& bias,
                          std::optional<at::ScalarType> dtype) {
  static auto op = find_op<decltype(int8_scaled_mm)>("llmint8::int8_scaled_mm");
  return op.call(A, B, row_stats, col_stats, bias, dtype);
}

std::tuple<at::Tensor, std::optional<at::Tensor>> int8_mixed_scaled_mm(
    const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA, const at::Tensor& SCB,
    const std::optional<at::Tensor>& outlier_cols, const std::optional<at::Tensor>& bias) {
  static auto op = find_op<decltype(int8_mixed_scaled_mm)>("llmint8::int8_mixed_scaled_mm");
  return op.call(A, CA, CB, SCA, SCB, outlier_cols, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_double_quant(
    const at::Tensor& A, double threshold) {
  static auto op = find_op<decltype(int8_double_quant)>("llmint8::int8_double_quant");
  return op.call(A, threshold);
}

at::Tensor int8_linear(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                       const std::optional<at::Tensor>& bias, double threshold,
                       const std::optional<at::Tensor>& weight) {
  static auto op = find_op<decltype(int8_linear)>("llmint8::int8_linear");
  return op.call(A, CB, SCB, bias, threshold, weight);
}

}  // namespace llmint8
