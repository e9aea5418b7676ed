// CPU kernels of int8_vectorwise_quant, int8_vectorwise_dequant and int8_double_quant.
#include "cpu/quantize_rowwise_cpu.h"

#include "cpu/kernels/quantize_rowwise.h"
#include "cpu/kernels/quantize_rowwise_avx512.h"
#include "op_checks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>

namespace llmint8::cpu {

namespace {

// The AVX-512 row format of a dtype, where the CPU runs those kernels.
std::optional<kernels::RowFormat> avx512_format(at::ScalarType dtype) {
  if (!kernels::quantize_avx512_supported()) return std::nullopt;
  switch (dtype) {
    case at::kFloat: return kernels::RowFormat::kFloat32;
    case at::kBFloat16: return kernels::RowFormat::kBFloat16;
    case at::kHalf: return kernels::RowFormat::kFloat16;
    default: return std::nullopt;
  }
}

}  // namespace

at::Tensor outlier_column_mask(const at::Tensor& A2, double threshold) {
  const int64_t rows = A2.size(0), K = A2.size(1);
  auto mask = at::empty({K}, A2.options().dtype(at::kByte));
  if (const auto format = avx512_format(A2.scalar_type())) {
    kernels::mark_outlier_columns_avx512(*format, A2.const_data_ptr(), rows, K, static_cast<float>(threshold),
                                         mask.data_ptr<uint8_t>());
    return mask;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A2.scalar_type(), "outlier_column_mask", [&] {
    kernels::mark_outlier_columns(A2.const_data_ptr<scalar_t>(), rows, K, static_cast<float>(threshold),
                                  mask.data_ptr<uint8_t>());
  });
  return mask;
}

std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& A2, const at::Tensor& mask) {
  const int64_t rows = A2.size(0), K = A2.size(1);
  auto CA = at::empty({rows, K}, A2.options().dtype(at::kChar));
  auto SCA = at::empty({rows}, A2.options().dtype(at::kFloat));
  const uint8_t* is_outlier = mask.defined() ? mask.const_data_ptr<uint8_t>() : nullptr;
  if (const auto format = avx512_format(A2.scalar_type())) {
    const auto* a = static_cast<const char*>(A2.const_data_ptr());
    const int64_t row_bytes = K * static_cast<int64_t>(A2.element_size());
    int8_t* q = CA.data_ptr<int8_t>();
    float* stats = SCA.data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        stats[r] = kernels::quantize_row_avx512(*format, a + r * row_bytes, K, is_outlier, q + r * K);
      }
    });
    return {CA, SCA};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A2.scalar_type(), "quantize_rows", [&] {
    const scalar_t* a = A2.const_data_ptr<scalar_t>();
    int8_t* q = CA.data_ptr<int8_t>();
    float* stats = SCA.data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) stats[r] = kernels::quantize_row(a + r * K, K, is_outlier, q + r * K);
    });
  });
  return {CA, SCA};
}

namespace {

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_vectorwise_quant_cpu(const at::Tensor& A,
                                                                                          double threshold) {
  op_checks::vectorwise_quant("int8_vectorwise_quant", A, threshold);
  const auto A2 = as_rows(A);
  const auto outliers = threshold > 0.0 ? outlier_columns(outlier_column_mask(A2, threshold)) : OutlierColumns{};
  auto [CA, SCA] = quantize_rows(A2, outliers.mask);
  return {CA.view(A.sizes()), SCA, outliers.cols};
}

at::Tensor int8_vectorwise_dequant_cpu(const at::Tensor& A, const at::Tensor& stats) {
  op_checks::vectorwise_dequant(A, stats);
  const auto A2 = as_rows(A);
  const auto s = stats.contiguous();
  const int64_t rows = A2.size(0), K = A2.size(1);
  auto out = at::empty({rows, K}, A.options().dtype(at::kFloat));
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    kernels::dequantize_rows(A2.const_data_ptr<int8_t>(), s.const_data_ptr<float>(), K, r0, r1,
                             out.data_ptr<float>());
  });
  return out.view(A.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_double_quant_cpu(
    const at::Tensor& A, double threshold) {
  op_checks::vectorwise_quant("int8_double_quant", A, threshold);
  const auto A2 = as_rows(A);
  const int64_t rows = A2.size(0), K = A2.size(1);
  const auto outliers = threshold > 0.0 ? outlier_columns(outlier_column_mask(A2, threshold)) : OutlierColumns{};
  const auto& mask = outliers.mask;
  auto [CA, row_stats] = quantize_rows(A2, mask);
  auto CAt = at::empty({rows, K}, A.options().dtype(at::kChar));
  auto col_stats = at::empty({K}, A.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A2.scalar_type(), "int8_double_quant", [&] {
    kernels::quantize_columns(A2.const_data_ptr<scalar_t>(), rows, K,
                              mask.defined() ? mask.const_data_ptr<uint8_t>() : nullptr, CAt.data_ptr<int8_t>(),
                              col_stats.data_ptr<float>());
  });
  return {CA.view(A.sizes()), CAt.view(A.sizes()), row_stats, col_stats, outliers.cols};
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, CPU, m) {
  m.impl("int8_vectorwise_quant", &int8_vectorwise_quant_cpu);
  m.impl("int8_vectorwise_dequant", &int8_vectorwise_dequant_cpu);
  m.impl("int8_double_quant", &int8_double_quant_cpu);
}

}  // namespace llmint8::cpu
