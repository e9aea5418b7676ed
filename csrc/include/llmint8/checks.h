// Named argument checks shared by every kernel (CPU, CUDA, Meta). Messages
// name the operator and the argument and give the expected and actual value.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <initializer_list>

namespace llmint8::checks {

// Wrong dtype raises TypeError in Python.
void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType expected);
// fp16, bf16 or fp32.
void check_float_dtype(const char* op, const char* name, const at::Tensor& t);
void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t expected);
void check_min_dim(const char* op, const char* name, const at::Tensor& t, int64_t minimum);
void check_size(const char* op, const char* name, const at::Tensor& t, int64_t dim, const c10::SymInt& expected,
                const char* what);
// Every tensor on `reference`'s device (type and index).
void check_same_device(const char* op, const char* ref_name, const at::Tensor& reference, const char* name,
                       const at::Tensor& t);
// The outlier threshold's rule, in every message about one (ops, modules, config.json, the CLI).
constexpr const char* kThresholdRule = "a finite number >= 0 (0 disables outlier handling)";
void check_threshold(const char* op, double threshold);
void check_k_limit(const char* op, const char* name, const c10::SymInt& K);

// Number of rows of A [..., K] once the leading dims are flattened.
c10::SymInt rows_of(const at::Tensor& A);

}  // namespace llmint8::checks
