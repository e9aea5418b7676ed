// CUDA implementations of every llmint8 op: argument checks, device guard,
// current stream, then the torch-free launchers of cuda/*.cu, with the launch
// error checked after each one. Registered under the CUDA dispatch key.
#include "cuda/int8_gemm_cublaslt.h"
#include "cuda/launchers.h"
#include "op_checks.h"
#include "tensor_utils.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <map>
#include <mutex>

namespace llmint8::cuda {

namespace {

FloatKind float_kind(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return FloatKind::f16;
    case at::kBFloat16: return FloatKind::bf16;
    case at::kFloat: return FloatKind::f32;
    default: TORCH_CHECK(false, "llmint8: no CUDA kernel for dtype ", t);
  }
}

cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// cuBLASLt's workspace: one per device, allocated on first use and kept.
void* cublaslt_workspace(const at::Device& device) {
  static std::mutex mutex;
  static std::map<int, at::Tensor> workspaces;
  std::lock_guard<std::mutex> lock(mutex);
  auto& ws = workspaces[device.index()];
  if (!ws.defined()) {
    ws = at::empty({static_cast<int64_t>(kCublasLtWorkspaceBytes)}, at::TensorOptions().dtype(at::kByte).device(device));
  }
  return ws.data_ptr();
}

// int32 C[M, N] = A2[M, K] @ B[N, K]^T: cuBLASLt where its int8 kernels apply,
// the exact CUDA-core kernel elsewhere (K % 4 != 0, odd N, unaligned views).
void int8_gemm_into(const at::Tensor& A2, const at::Tensor& B, int32_t* C) {
  const int64_t M = A2.size(0), K = A2.size(1), N = B.size(0);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    C10_CUDA_CHECK(cudaMemsetAsync(C, 0, sizeof(int32_t) * M * N, stream()));
    return;
  }
  const int8_t* a = A2.const_data_ptr<int8_t>();
  const int8_t* b = B.const_data_ptr<int8_t>();
  if (cublaslt_int8_supported(a, b, C, N, K) &&
      cublaslt_int8_gemm(a, b, C, M, N, K, cublaslt_workspace(A2.device()), stream())) {
    return;
  }
  C10_CUDA_CHECK(launch_int8_gemm_exact(a, b, C, M, N, K, stream()));
}

// uint8 [K] mask of the outlier columns of A2 [rows, K].
at::Tensor outlier_column_mask(const at::Tensor& A2, double threshold) {
  auto mask = at::zeros({A2.size(1)}, A2.options().dtype(at::kByte));
  C10_CUDA_CHECK(launch_mark_outlier_columns(float_kind(A2.scalar_type()), A2.const_data_ptr(), A2.size(0),
                                             A2.size(1), static_cast<float>(threshold), mask.data_ptr<uint8_t>(),
                                             stream()));
  return mask;
}

std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& A2, const at::Tensor& mask) {
  const int64_t rows = A2.size(0), K = A2.size(1);
  auto CA = at::empty({rows, K}, A2.options().dtype(at::kChar));
  auto SCA = at::empty({rows}, A2.options().dtype(at::kFloat));
  C10_CUDA_CHECK(launch_quantize_rows(float_kind(A2.scalar_type()), A2.const_data_ptr(), rows, K,
                                      mask.defined() ? mask.const_data_ptr<uint8_t>() : nullptr,
                                      CA.data_ptr<int8_t>(), SCA.data_ptr<float>(), stream()));
  return {CA, SCA};
}

// Y2 [M, N] = dequantized int8 product + outlier term + bias, in out_dtype.
at::Tensor dequantize_product(const at::Tensor& acc, const at::Tensor& row, const at::Tensor& col,
                              const at::Tensor& bias, const OutlierTerm* outliers, at::ScalarType out_dtype) {
  const int64_t M = acc.size(0), N = acc.size(1);
  auto out = at::empty({M, N}, acc.options().dtype(out_dtype));
  C10_CUDA_CHECK(launch_dequantize_product(acc.const_data_ptr<int32_t>(), M, N, row.const_data_ptr<float>(),
                                           col.const_data_ptr<float>(),
                                           bias.defined() ? bias.const_data_ptr<float>() : nullptr, outliers,
                                           float_kind(out_dtype), out.data_ptr(), stream()));
  return out;
}

#ifdef LLMINT8_WITH_SM90_GEMM
// Whether the fused Hopper GEMM takes this product (sm_90 device, aligned shapes).
bool fused_gemm_applies(const at::Tensor& q, const at::Tensor& cb, const at::Tensor& out) {
  return scaled_gemm_sm90_applies(q.device().index(), q.const_data_ptr(), cb.const_data_ptr(), out.const_data_ptr(),
                                  q.size(0), cb.size(0), q.size(1), float_kind(out.scalar_type()));
}
#endif

// out [M, N] = dequantized int8 product of q [M, K] and cb [N, K] (+ outliers, gathered
// first) (+ bias), in out_dtype. The int32 products stay in registers: decode sizes take the
// fused GEMV; larger ones the fused Hopper GEMM, whose epilogue adds the outlier term and bias
// that a first pass wrote into out. Elsewhere (other cards, unaligned shapes, no CUTLASS) the
// int8 GEMM writes int32 products, then one epilogue pass.
at::Tensor scaled_product(const at::Tensor& q, const at::Tensor& row, const at::Tensor& cb, const at::Tensor& col,
                          const at::Tensor& bias, const OutlierTerm* outliers, at::ScalarType out_dtype) {
  const int64_t M = q.size(0), K = q.size(1), N = cb.size(0);
  auto out = at::empty({M, N}, q.options().dtype(out_dtype));
  const float* bias_ptr = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  if (gemv_applies(M)) {
    C10_CUDA_CHECK(launch_int8_gemv(q.const_data_ptr<int8_t>(), row.const_data_ptr<float>(), M,
                                    cb.const_data_ptr<int8_t>(), col.const_data_ptr<float>(), bias_ptr, N, K, outliers,
                                    float_kind(out_dtype), out.data_ptr(), stream()));
    return out;
  }
#ifdef LLMINT8_WITH_SM90_GEMM
  if (M > 0 && N > 0 && fused_gemm_applies(q, cb, out)) {
    if (outliers != nullptr) {  // out = outlier term + bias, then the GEMM adds its product
      C10_CUDA_CHECK(launch_dequantize_product(nullptr, M, N, row.const_data_ptr<float>(), col.const_data_ptr<float>(),
                                               bias_ptr, outliers, float_kind(out_dtype), out.data_ptr(), stream()));
    }
    C10_CUDA_CHECK(launch_scaled_gemm_sm90(q.const_data_ptr<int8_t>(), cb.const_data_ptr<int8_t>(), M, N, K,
                                           row.const_data_ptr<float>(), col.const_data_ptr<float>(),
                                           outliers != nullptr ? nullptr : bias_ptr, outliers != nullptr,
                                           float_kind(out_dtype), out.data_ptr(), stream()));
    return out;
  }
#endif
  auto acc = at::empty({M, N}, q.options().dtype(at::kInt));
  int8_gemm_into(q, cb, acc.data_ptr<int32_t>());
  C10_CUDA_CHECK(launch_dequantize_product(acc.const_data_ptr<int32_t>(), M, N, row.const_data_ptr<float>(),
                                           col.const_data_ptr<float>(), bias_ptr, outliers, float_kind(out_dtype),
                                           out.data_ptr(), stream()));
  return out;
}

// The LLM.int8() forward from quantized rows. cols/count (on the device) name
// the outlier columns, or are undefined when there are none.
at::Tensor mixed_forward(const at::Tensor& A2, const at::Tensor& CA2, const at::Tensor& SCA, const at::Tensor& CB,
                         const at::Tensor& SCB, const at::Tensor& cols, const at::Tensor& count,
                         const std::optional<at::Tensor>& bias) {
  const int64_t M = CA2.size(0), K = CA2.size(1), N = CB.size(0);
  const auto CBc = CB.contiguous();
  const auto sca = SCA.contiguous(), scb = SCB.contiguous();
  if (!cols.defined()) return scaled_product(CA2, sca, CBc, scb, bias_fp32(bias), nullptr, A2.scalar_type());
  // Scratch of a fixed size (the outlier count stays on the device): M x 64 and 64 x N floats.
  auto sub_a = at::empty({M, kOutlierCapacity}, A2.options().dtype(at::kFloat));
  auto sub_w = at::empty({kOutlierCapacity, N}, A2.options().dtype(at::kFloat));
  const OutlierTerm term{float_kind(A2.scalar_type()), A2.const_data_ptr(), cols.const_data_ptr<int32_t>(),
                         count.const_data_ptr<int32_t>(), CBc.const_data_ptr<int8_t>(), K,
                         sub_a.data_ptr<float>(), sub_w.data_ptr<float>()};
  C10_CUDA_CHECK(launch_gather_outlier_columns(term, M, N, scb.const_data_ptr<float>(), stream()));
  return scaled_product(CA2, sca, CBc, scb, bias_fp32(bias), &term, A2.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_vectorwise_quant_cuda(const at::Tensor& A,
                                                                                           double threshold) {
  op_checks::vectorwise_quant("int8_vectorwise_quant", A, threshold);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  // The columns' count sizes an output: this public op syncs, as bitsandbytes' does (int8_linear does not).
  const auto outliers = threshold > 0.0 ? outlier_columns(outlier_column_mask(A2, threshold)) : OutlierColumns{};
  auto [CA, SCA] = quantize_rows(A2, outliers.mask);
  return {CA.view(A.sizes()), SCA, outliers.cols};
}

at::Tensor int8_vectorwise_dequant_cuda(const at::Tensor& A, const at::Tensor& stats) {
  op_checks::vectorwise_dequant(A, stats);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const auto s = stats.contiguous();
  auto out = at::empty(A2.sizes(), A.options().dtype(at::kFloat));
  C10_CUDA_CHECK(launch_dequantize_rows(A2.const_data_ptr<int8_t>(), s.const_data_ptr<float>(), A2.size(0),
                                        A2.size(1), out.data_ptr<float>(), stream()));
  return out.view(A.sizes());
}

at::Tensor int8_linear_matmul_cuda(const at::Tensor& A, const at::Tensor& B) {
  op_checks::linear_matmul("int8_linear_matmul", A, B);
  const c10::cuda::CUDAGuard guard(A.device());
  auto out = at::empty(output_shape(A, B.size(0)), A.options().dtype(at::kInt));
  int8_gemm_into(as_rows(A), B.contiguous(), out.data_ptr<int32_t>());
  return out;
}

void int8_linear_matmul_out_cuda(const at::Tensor& A, const at::Tensor& B, at::Tensor& out) {
  op_checks::linear_matmul_out(A, B, out);
  const c10::cuda::CUDAGuard guard(A.device());
  if (out.is_contiguous()) {
    int8_gemm_into(as_rows(A), B.contiguous(), out.data_ptr<int32_t>());
  } else {
    out.copy_(int8_linear_matmul_cuda(A, B));
  }
}

at::Tensor int8_mm_dequant_cuda(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                                std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& bias) {
  op_checks::mm_dequant(A, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_mm_dequant", dtype, at::kHalf);
  const c10::cuda::CUDAGuard guard(A.device());
  return dequantize_product(as_rows(A), row_stats.contiguous(), col_stats.contiguous(), bias_fp32(bias), nullptr,
                            out_dtype)
      .view(A.sizes());
}

at::Tensor int8_scaled_mm_cuda(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats,
                               const at::Tensor& col_stats, const std::optional<at::Tensor>& bias,
                               std::optional<at::ScalarType> dtype) {
  op_checks::scaled_mm(A, B, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_scaled_mm", dtype, at::kHalf);
  const c10::cuda::CUDAGuard guard(A.device());
  return scaled_product(as_rows(A), row_stats.contiguous(), B.contiguous(), col_stats.contiguous(), bias_fp32(bias),
                        nullptr, out_dtype)
      .view(output_shape(A, B.size(0)));
}

std::tuple<at::Tensor, std::optional<at::Tensor>> int8_mixed_scaled_mm_cuda(
    const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA, const at::Tensor& SCB,
    const std::optional<at::Tensor>& outlier_cols, const std::optional<at::Tensor>& bias) {
  op_checks::mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols, bias);
  const c10::cuda::CUDAGuard guard(A.device());
  const int64_t K = A.size(-1);
  const auto A2 = as_rows(A);
  at::Tensor cols, count;
  std::optional<at::Tensor> sub_a;
  if (outlier_cols.has_value()) {
    check_outlier_cols_range("int8_mixed_scaled_mm", *outlier_cols, K);
    cols = outlier_cols->to(at::kInt).contiguous();
    count = at::full({1}, cols.numel(), A.options().dtype(at::kInt));
    sub_a = A2.index_select(1, *outlier_cols);
  }
  auto Y = mixed_forward(A2, as_rows(CA), SCA, CB, SCB, cols, count, bias).view(output_shape(A, CB.size(0)));
  return {Y, sub_a};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_double_quant_cuda(
    const at::Tensor& A, double threshold) {
  op_checks::vectorwise_quant("int8_double_quant", A, threshold);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const int64_t rows = A2.size(0), K = A2.size(1);
  const auto outliers = threshold > 0.0 ? outlier_columns(outlier_column_mask(A2, threshold)) : OutlierColumns{};
  const auto& mask = outliers.mask;
  auto [CA, row_stats] = quantize_rows(A2, mask);
  auto CAt = at::empty({rows, K}, A.options().dtype(at::kChar));
  auto col_stats = at::empty({K}, A.options().dtype(at::kFloat));
  C10_CUDA_CHECK(launch_quantize_columns(float_kind(A2.scalar_type()), A2.const_data_ptr(), rows, K,
                                         mask.defined() ? mask.const_data_ptr<uint8_t>() : nullptr,
                                         CAt.data_ptr<int8_t>(), col_stats.data_ptr<float>(), stream()));
  return {CA.view(A.sizes()), CAt.view(A.sizes()), row_stats, col_stats, outliers.cols};
}

// The layer op: no host synchronization at any threshold. The outlier columns
// are found, compacted and counted on the device; the epilogue reads the count.
at::Tensor int8_linear_cuda(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                            const std::optional<at::Tensor>& bias, double threshold,
                            const std::optional<at::Tensor>& weight) {
  op_checks::int8_linear(A, CB, SCB, bias, threshold, weight);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const int64_t K = A2.size(1);
  at::Tensor mask, cols, count;
  if (threshold > 0.0) {
    mask = outlier_column_mask(A2, threshold);
    cols = at::empty({K}, A.options().dtype(at::kInt));  // capacity K: correct for any number of outliers
    count = at::empty({1}, A.options().dtype(at::kInt));
    C10_CUDA_CHECK(launch_compact_columns(mask.const_data_ptr<uint8_t>(), K, cols.data_ptr<int32_t>(),
                                          count.data_ptr<int32_t>(), stream()));
  }
  auto [CA2, SCA] = quantize_rows(A2, mask);
  return mixed_forward(A2, CA2, SCA, CB, SCB, cols, count, bias).view(output_shape(A, CB.size(0)));
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, CUDA, m) {
  m.impl("int8_vectorwise_quant", &int8_vectorwise_quant_cuda);
  m.impl("int8_vectorwise_dequant", &int8_vectorwise_dequant_cuda);
  m.impl("int8_linear_matmul", &int8_linear_matmul_cuda);
  m.impl("int8_linear_matmul.out", &int8_linear_matmul_out_cuda);
  m.impl("int8_mm_dequant", &int8_mm_dequant_cuda);
  m.impl("int8_scaled_mm", &int8_scaled_mm_cuda);
  m.impl("int8_mixed_scaled_mm", &int8_mixed_scaled_mm_cuda);
  m.impl("int8_double_quant", &int8_double_quant_cuda);
  m.impl("int8_linear", &int8_linear_cuda);
}

}  // namespace llmint8::cuda
