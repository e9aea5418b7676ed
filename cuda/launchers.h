// Torch-free entry points of the CUDA kernels: raw device pointers and a
// stream in, a cudaError_t out (the launch's error). The ATen wrappers in
// int8_ops_cuda.cpp call these; Catch2 could call them alone.
// Every [rows, K] matrix is row-major and contiguous; indices are 64-bit
// because rows * K may pass 2^31.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace llmint8::cuda {

// The activation dtypes handled natively (no detour through fp16).
enum class FloatKind { f16, bf16, f32 };

// mask[k] = 1 where |a[r, k]| >= threshold for some row (mask must be zeroed first).
cudaError_t launch_mark_outlier_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                        uint8_t* mask, cudaStream_t stream);

// Sorted indices of the flagged columns into cols [K] and their number into
// count [1], on the device: the layer op never asks the host how many there are.
cudaError_t launch_compact_columns(const uint8_t* mask, int64_t K, int32_t* cols, int32_t* count,
                                   cudaStream_t stream);

// Row-wise absmax quantization leaving out the flagged columns (mask may be null).
cudaError_t launch_quantize_rows(FloatKind kind, const void* a, int64_t rows, int64_t K, const uint8_t* mask,
                                 int8_t* q, float* stats, cudaStream_t stream);

// Column-wise absmax quantization; flagged columns get stat 0 and codes 0.
cudaError_t launch_quantize_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, const uint8_t* mask,
                                    int8_t* q, float* col_stats, cudaStream_t stream);

// out[r, k] = q[r, k] * stats[r] / 127 in fp32.
cudaError_t launch_dequantize_rows(const int8_t* q, const float* stats, int64_t rows, int64_t K, float* out,
                                   cudaStream_t stream);

// Exact int32 C[M, N] = A[M, K] @ B[N, K]^T on CUDA cores, any shape and alignment
// (the fallback where cuBLASLt's int8 kernels do not apply).
cudaError_t launch_int8_gemm_exact(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                                   cudaStream_t stream);

// Outlier columns kept in the compact buffers below; more are still handled
// (read in place, slower), so any number from 0 to K gives the right answer.
constexpr int kOutlierCapacity = 64;

// The floating-point part of LLM.int8(): a[:, cols[:count]] against the
// dequantized weight columns (cb * col_scale / 127). count lives on the device.
struct OutlierTerm {
  FloatKind kind;
  const void* a;         // [M, K] activations
  const int32_t* cols;   // column indices (sorted)
  const int32_t* count;  // [1] number of valid entries in cols
  const int8_t* cb;      // [N, K] weight codes
  int64_t K;
  float* sub_a;          // [M, kOutlierCapacity] scratch: gathered activation columns
  float* sub_w;          // [kOutlierCapacity, N] scratch: gathered, dequantized weight columns
};

// Fills sub_a and sub_w with the first min(count, kOutlierCapacity) outlier columns.
cudaError_t launch_gather_outlier_columns(const OutlierTerm& outliers, int64_t M, int64_t N, const float* col_scale,
                                          cudaStream_t stream);

// out[m, n] = acc[m, n] * row[m] * col[n] / 127^2 (+ outlier term) (+ bias[n]),
// computed in fp32 and written once in out_kind. outliers (gathered first) and
// bias may be null; acc too, leaving the outlier term plus bias.
cudaError_t launch_dequantize_product(const int32_t* acc, int64_t M, int64_t N, const float* row, const float* col,
                                      const float* bias, const OutlierTerm* outliers, FloatKind out_kind, void* out,
                                      cudaStream_t stream);

// Whether launch_int8_gemv takes M rows (decode sizes: 1 and 2).
bool gemv_applies(int64_t M);

// The decode-size product with its epilogue fused: out[m, n] as in
// launch_dequantize_product, with acc = q[m, :] . cb[n, :] computed exactly in
// registers (no int32 buffer). q: [M, K] int8 codes; outliers gathered first.
cudaError_t launch_int8_gemv(const int8_t* q, const float* row, int64_t M, const int8_t* cb, const float* col,
                             const float* bias, int64_t N, int64_t K, const OutlierTerm* outliers,
                             FloatKind out_kind, void* out, cudaStream_t stream);

// The fused Hopper product (CUTLASS, sm_90a; built where the CUTLASS headers are found):
// out[m, n] = (a[m, :] . b[n, :]) * row[m] * col[n] / 127^2 + (add_to_out ? out[m, n] : bias[n]),
// the int32 accumulators never leaving registers. add_to_out: out already holds the outlier
// term and the bias. applies() says whether it takes this device, shape and alignment.
bool scaled_gemm_sm90_applies(int device, const void* a, const void* b, const void* out, int64_t M, int64_t N,
                              int64_t K, FloatKind out_kind);
cudaError_t launch_scaled_gemm_sm90(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K,
                                    const float* row, const float* col, const float* bias, bool add_to_out,
                                    FloatKind out_kind, void* out, cudaStream_t stream);

}  // namespace llmint8::cuda
