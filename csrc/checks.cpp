#include <llmint8/checks.h>
#include <llmint8/ops.h>

#include "op_checks.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <string>

namespace llmint8::checks {

namespace {

// The names Python users know (torch.int8, not c10's "Char").
const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

// Numbers are formatted here rather than streamed into the error message:
// TORCH_CHECK builds its message in a stream constructed in this library, and
// on some toolchains (seen with g++ 13 against the torch 2.11 wheel) inserting
// an integer into such a stream crashes instead of raising.
std::string text(int64_t v) { return std::to_string(v); }

std::string text(const c10::SymInt& v) {
  if (auto concrete = v.maybe_as_int()) return std::to_string(*concrete);
  return v.toSymNodeImplUnowned()->str();
}

std::string text(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", v);
  return buffer;
}

std::string shape_string(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + text(t.sym_size(d));
  return s + "]";
}

}  // namespace

void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType expected) {
  TORCH_CHECK_TYPE(t.scalar_type() == expected, "llmint8::", op, ": argument '", name, "' must have dtype ",
                   dtype_name(expected), ", got ", dtype_name(t.scalar_type()));
}

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kHalf || s == at::kBFloat16 || s == at::kFloat, "llmint8::", op, ": argument '", name,
                   "' must have dtype float16, bfloat16 or float32, got ", dtype_name(s));
}

void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t expected) {
  TORCH_CHECK_VALUE(t.dim() == expected, "llmint8::", op, ": argument '", name, "' must have ", text(expected),
                    " dimension(s), got ", text(t.dim()), " (shape ", shape_string(t), ")");
}

void check_min_dim(const char* op, const char* name, const at::Tensor& t, int64_t minimum) {
  TORCH_CHECK_VALUE(t.dim() >= minimum, "llmint8::", op, ": argument '", name, "' must have at least ",
                    text(minimum), " dimension(s), got ", text(t.dim()), " (shape ", shape_string(t), ")");
}

void check_size(const char* op, const char* name, const at::Tensor& t, int64_t dim, const c10::SymInt& expected,
                const char* what) {
  const auto& actual = t.sym_size(dim);
  TORCH_CHECK_VALUE(actual == expected, "llmint8::", op, ": argument '", name, "' must have size ", text(expected),
                    " in dimension ", text(dim < 0 ? dim + t.dim() : dim), " (", what, "), got ", text(actual),
                    " (shape ", shape_string(t), ")");
}

void check_same_device(const char* op, const char* ref_name, const at::Tensor& reference, const char* name,
                       const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device() == reference.device(), "llmint8::", op, ": argument '", name,
                    "' must be on the same device as '", ref_name, "' (", reference.device().str(), "), got ",
                    t.device().str());
}

void check_threshold(const char* op, double threshold) {
  TORCH_CHECK_VALUE(std::isfinite(threshold) && threshold >= 0.0, "llmint8::", op, ": argument 'threshold' must be ",
                    kThresholdRule, ", got ", text(threshold));
}

void check_k_limit(const char* op, const char* name, const c10::SymInt& K) {
  TORCH_CHECK_VALUE(K <= kMaxInt8DotK, "llmint8::", op, ": argument '", name, "' has K = ", text(K),
                    " columns; int8 dot products overflow int32 past K = ", text(kMaxInt8DotK));
}

c10::SymInt rows_of(const at::Tensor& A) {
  c10::SymInt rows = 1;
  for (int64_t d = 0; d + 1 < A.dim(); ++d) rows *= A.sym_size(d);
  return rows;
}

}  // namespace llmint8::checks

namespace llmint8::op_checks {

using namespace llmint8::checks;

namespace {

void check_optional_bias(const char* op, const at::Tensor& ref, const std::optional<at::Tensor>& bias,
                         const c10::SymInt& N) {
  if (!bias.has_value()) return;
  check_same_device(op, "A", ref, "bias", *bias);
  check_float_dtype(op, "bias", *bias);
  check_dim(op, "bias", *bias, 1);
  check_size(op, "bias", *bias, 0, N, "N, output features");
}

}  // namespace

void vectorwise_quant(const char* op, const at::Tensor& A, double threshold) {
  check_float_dtype(op, "A", A);
  check_min_dim(op, "A", A, 1);
  check_threshold(op, threshold);
}

void vectorwise_dequant(const at::Tensor& A, const at::Tensor& stats) {
  const char* op = "int8_vectorwise_dequant";
  check_dtype(op, "A", A, at::kChar);
  check_min_dim(op, "A", A, 1);
  check_same_device(op, "A", A, "stats", stats);
  check_dtype(op, "stats", stats, at::kFloat);
  check_dim(op, "stats", stats, 1);
  check_size(op, "stats", stats, 0, rows_of(A), "rows of A");
}

void linear_matmul(const char* op, const at::Tensor& A, const at::Tensor& B) {
  check_dtype(op, "A", A, at::kChar);
  check_min_dim(op, "A", A, 1);
  check_same_device(op, "A", A, "B", B);
  check_dtype(op, "B", B, at::kChar);
  check_dim(op, "B", B, 2);
  check_size(op, "B", B, 1, A.sym_size(-1), "K, the last dimension of A");
  check_k_limit(op, "A", A.sym_size(-1));
}

void linear_matmul_out(const at::Tensor& A, const at::Tensor& B, const at::Tensor& out) {
  const char* op = "int8_linear_matmul.out";
  linear_matmul(op, A, B);
  check_same_device(op, "A", A, "out", out);
  check_dtype(op, "out", out, at::kInt);
  check_dim(op, "out", out, A.dim());
  for (int64_t d = 0; d + 1 < A.dim(); ++d) check_size(op, "out", out, d, A.sym_size(d), "leading dims of A");
  check_size(op, "out", out, -1, B.sym_size(0), "N, rows of B");
}

at::ScalarType output_dtype(const char* op, std::optional<at::ScalarType> dtype, at::ScalarType fallback) {
  const auto t = dtype.value_or(fallback);
  TORCH_CHECK_TYPE(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat, "llmint8::", op,
                   ": argument 'dtype' must be float16, bfloat16 or float32, got ", dtype_name(t));
  return t;
}

void mm_dequant(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                const std::optional<at::Tensor>& bias) {
  const char* op = "int8_mm_dequant";
  check_dtype(op, "A", A, at::kInt);
  check_min_dim(op, "A", A, 1);
  const auto N = A.sym_size(-1);
  check_same_device(op, "A", A, "row_stats", row_stats);
  check_dtype(op, "row_stats", row_stats, at::kFloat);
  check_dim(op, "row_stats", row_stats, 1);
  check_size(op, "row_stats", row_stats, 0, rows_of(A), "rows of A");
  check_same_device(op, "A", A, "col_stats", col_stats);
  check_dtype(op, "col_stats", col_stats, at::kFloat);
  check_dim(op, "col_stats", col_stats, 1);
  check_size(op, "col_stats", col_stats, 0, N, "N, the last dimension of A");
  check_optional_bias(op, A, bias, N);
}

void scaled_mm(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats, const at::Tensor& col_stats,
               const std::optional<at::Tensor>& bias) {
  const char* op = "int8_scaled_mm";
  linear_matmul(op, A, B);
  const auto N = B.sym_size(0);
  check_same_device(op, "A", A, "row_stats", row_stats);
  check_dtype(op, "row_stats", row_stats, at::kFloat);
  check_dim(op, "row_stats", row_stats, 1);
  check_size(op, "row_stats", row_stats, 0, rows_of(A), "rows of A");
  check_same_device(op, "A", A, "col_stats", col_stats);
  check_dtype(op, "col_stats", col_stats, at::kFloat);
  check_dim(op, "col_stats", col_stats, 1);
  check_size(op, "col_stats", col_stats, 0, N, "N, rows of B");
  check_optional_bias(op, A, bias, N);
}

void weight(const char* op, const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB) {
  check_same_device(op, "A", A, "CB", CB);
  check_dtype(op, "CB", CB, at::kChar);
  check_dim(op, "CB", CB, 2);
  check_size(op, "CB", CB, 1, A.sym_size(-1), "K, the last dimension of A");
  check_k_limit(op, "A", A.sym_size(-1));
  check_same_device(op, "A", A, "SCB", SCB);
  check_dtype(op, "SCB", SCB, at::kFloat);
  check_dim(op, "SCB", SCB, 1);
  check_size(op, "SCB", SCB, 0, CB.sym_size(0), "N, rows of CB");
}

void mixed_scaled_mm(const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA,
                     const at::Tensor& SCB, const std::optional<at::Tensor>& outlier_cols,
                     const std::optional<at::Tensor>& bias) {
  const char* op = "int8_mixed_scaled_mm";
  check_float_dtype(op, "A", A);
  check_min_dim(op, "A", A, 1);
  check_same_device(op, "A", A, "CA", CA);
  check_dtype(op, "CA", CA, at::kChar);
  check_dim(op, "CA", CA, A.dim());
  for (int64_t d = 0; d < A.dim(); ++d) check_size(op, "CA", CA, d, A.sym_size(d), "the shape of A");
  weight(op, A, CB, SCB);
  check_same_device(op, "A", A, "SCA", SCA);
  check_dtype(op, "SCA", SCA, at::kFloat);
  check_dim(op, "SCA", SCA, 1);
  check_size(op, "SCA", SCA, 0, rows_of(A), "rows of A");
  if (outlier_cols.has_value()) {
    check_same_device(op, "A", A, "outlier_cols", *outlier_cols);
    check_dtype(op, "outlier_cols", *outlier_cols, at::kLong);
    check_dim(op, "outlier_cols", *outlier_cols, 1);
  }
  check_optional_bias(op, A, bias, CB.sym_size(0));
}

void int8_linear(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                 const std::optional<at::Tensor>& bias, double threshold, const std::optional<at::Tensor>& weight_fp) {
  const char* op = "int8_linear";
  check_float_dtype(op, "A", A);
  check_min_dim(op, "A", A, 1);
  check_threshold(op, threshold);
  weight(op, A, CB, SCB);
  check_optional_bias(op, A, bias, CB.sym_size(0));
  if (weight_fp.has_value()) {
    check_same_device(op, "A", A, "weight", *weight_fp);
    check_float_dtype(op, "weight", *weight_fp);
    check_dim(op, "weight", *weight_fp, 2);
    check_size(op, "weight", *weight_fp, 0, CB.sym_size(0), "N, rows of CB");
    check_size(op, "weight", *weight_fp, 1, CB.sym_size(1), "K, columns of CB");
  }
}

}  // namespace llmint8::op_checks
