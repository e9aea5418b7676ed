#include "tensor_utils.h"

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>

#include <string>

namespace llmint8 {

at::Tensor as_rows(const at::Tensor& A) {
  const int64_t rows = c10::multiply_integers(A.sizes().begin(), A.sizes().end() - 1);
  return A.reshape({rows, A.size(-1)}).contiguous();
}

std::vector<int64_t> output_shape(const at::Tensor& A, int64_t N) {
  auto shape = A.sizes().vec();
  shape.back() = N;
  return shape;
}

at::Tensor bias_fp32(const std::optional<at::Tensor>& bias) {
  return bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
}

OutlierColumns outlier_columns(const at::Tensor& mask) { return {mask, at::nonzero(mask).flatten()}; }

void check_outlier_cols_range(const char* op, const at::Tensor& cols, int64_t K) {
  if (cols.numel() == 0) return;
  const int64_t lo = cols.min().item<int64_t>(), hi = cols.max().item<int64_t>();
  // Numbers go in as text: see the note on text() in checks.cpp.
  TORCH_CHECK_INDEX(lo >= 0 && hi < K, "llmint8::", op, ": argument 'outlier_cols' must hold column indices in [0, ",
                    std::to_string(K), "), got values in [", std::to_string(lo), ", ", std::to_string(hi), "]");
}

}  // namespace llmint8
