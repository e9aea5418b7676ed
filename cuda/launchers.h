// Torch-free entry points of the CUDA kernels: raw device pointers and a
// stream in, a cudaError_t out (the launch's error). The ATen wrappers in
// int8_ops_cuda.cpp call these; Catch2 could call them alone.
// Every [rows, K] matrix is row-major and contiguous; indices are 64-bit
// because rows * K may pass 2^31.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace llmint8::cuda {

// The activation dtypes handled natively (no detour through fp16).
enum class FloatKind { f16, bf16, f32 };

// Outlier columns travel as a sorted int32 list and its length, both on the device:
// no kernel asks the host how many there are, so the layer op never synchronizes.

// ---------------------------------------------------------------- quantization

// Rows the decode path quantizes in one launch (one tensor-core tile of rows).
constexpr int kSmallMRows = 16;

// Decode sizes (1 <= rows <= kSmallMRows), one launch: row-wise absmax codes q and stats,
// leaving out whole outlier columns (|a| >= threshold in some row; threshold 0: none), which
// go sorted into cols [K] with their number in count [1] (cols/count may be null at threshold 0).
// cluster_blocks > 1 (sm_90 only) shares the columns among a thread-block cluster.
cudaError_t launch_quantize_small_m(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                    int8_t* q, float* stats, int32_t* cols, int32_t* count, int cluster_blocks,
                                    cudaStream_t stream);

// Blocks of a cluster launch_quantize_small_m should use on this device (1 before sm_90).
int small_m_quantize_cluster_blocks(int device, int64_t rows, int64_t K);

// Any number of rows: finds the outlier columns into cols [K] / count [1], sorted. mask [K]
// and ticket [1] are scratch that must be zero on entry; the kernel leaves them zero again,
// so a cached workspace needs no clearing between calls.
cudaError_t launch_find_outlier_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                        uint8_t* mask, uint32_t* ticket, int32_t* cols, int32_t* count,
                                        cudaStream_t stream);

// Row-wise absmax quantization leaving out the listed columns (cols/count may be null: none).
cudaError_t launch_quantize_rows(FloatKind kind, const void* a, int64_t rows, int64_t K, const int32_t* cols,
                                 const int32_t* count, int8_t* q, float* stats, cudaStream_t stream);

// Column-wise absmax quantization; the listed columns get stat 0 and codes 0.
cudaError_t launch_quantize_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, const int32_t* cols,
                                    const int32_t* count, int8_t* q, float* col_stats, cudaStream_t stream);

// The activations [rows, K] (fp16 or bf16, K % 8 == 0, 16-byte aligned) quantized row-wise as
// LLM.int8() does and dequantized again into act [rows, K] of the same type, code * stat / 127;
// outlier columns (|a| >= threshold in some row; threshold 0: none) keep their values. Scratch:
// flags, K bytes (8-byte aligned), for threshold > 0; row_maxima, rows x
// dequantize_column_blocks(K) floats. bias_f32 non-null: bias [N] of bias_kind written there as
// fp32 too (rows <= 65535).
int64_t dequantize_column_blocks(int64_t K);
cudaError_t launch_dequantize_activations(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                          uint8_t* flags, float* row_maxima, void* act, const void* bias,
                                          FloatKind bias_kind, int64_t N, float* bias_f32, cudaStream_t stream);

// out[r, k] = q[r, k] * stats[r] / 127 in fp32.
cudaError_t launch_dequantize_rows(const int8_t* q, const float* stats, int64_t rows, int64_t K, float* out,
                                   cudaStream_t stream);

// ---------------------------------------------------------------- int32 products

// Exact int32 C[M, N] = A[M, K] @ B[N, K]^T on CUDA cores, any shape and alignment
// (the fallback where cuBLASLt's int8 kernels do not apply).
cudaError_t launch_int8_gemm_exact(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                                   cudaStream_t stream);

// Exact int32 C[M, N] = A @ B^T: cuBLASLt where its int8 kernels apply, the exact kernel
// elsewhere. workspace: kCublasLtWorkspaceBytes (int8_gemm_cublaslt.h) of device memory.
cudaError_t launch_int8_gemm_s32(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                                 void* workspace, cudaStream_t stream);

// ---------------------------------------------------------------- outlier term and epilogue

// The floating-point part of LLM.int8(): a[:, cols[j]] times the dequantized weight
// columns cb[:, cols[j]] * col_scale / 127, for j < *count.
struct OutlierTerm {
  FloatKind kind;
  const void* a;         // [M, K] activations
  const int32_t* cols;   // sorted column indices
  const int32_t* count;  // [1] number of valid entries in cols
};

// Outlier columns gathered into compact buffers for the GEMM epilogues; more are still
// handled (read in place, slower), so any number from 0 to K gives the right answer.
constexpr int kOutlierCapacity = 64;

// sub_a [kOutlierCapacity, M]: column j of the activations at j's row (a[m, cols[j]] at j*M + m);
// sub_w [kOutlierCapacity, N]: cb[n, cols[j]] * col[n] / 127 at j*N + n. Entries
// count <= j < zero_fill are written as 0 (for epilogues that always read zero_fill of them).
cudaError_t launch_gather_outlier_columns(const OutlierTerm& outliers, const int8_t* cb, const float* col, int64_t M,
                                          int64_t N, int64_t K, int zero_fill, float* sub_a, float* sub_w,
                                          cudaStream_t stream);

// The epilogue of LLM.int8() as its own pass, computed in fp32 and rounded once to out_kind:
//   out[m, n] = acc[m, n] * row[m] * col[n] / 127^2 + sum_{j < count} outlier_j + bias[n]
// acc may be null (no product). With accumulate, out[m, n] += sum_{first <= j < count} outlier_j
// instead (the outliers a GEMM epilogue left over; nothing to do, and an early exit, when
// count <= first). No outliers: outliers.count null; sub_a/sub_w as gathered above. The
// arguments travel to the kernel by value: no host pointer in them.
struct EpilogueArgs {
  const int32_t* acc;
  int64_t M, N, K;
  const float* row;
  const float* col;
  const void* bias;
  FloatKind bias_kind;
  OutlierTerm outliers;
  const int8_t* cb;
  const float* sub_a;
  const float* sub_w;
  int first_outlier;
  bool accumulate;
  FloatKind out_kind;
  void* out;
};
cudaError_t launch_dequantize_product(const EpilogueArgs& args, cudaStream_t stream);

// The outlier columns j in [first, *count) that a GEMM epilogue left over, on tensor cores
// (kernels/outlier_mma.cuh): out[m, n] += col[n] / 127 * sum_j a[m, cols[j]] * cb[n, cols[j]],
// for fp16 and bf16 activations. With splits > 1, partials holds splits * M * N floats. With
// sub_a / sub_w (the gathered buffers of launch_gather_outlier_columns) and *count at most
// kOutlierCapacity, the columns are read from them instead, with fused multiply-adds.
struct OutlierMmaArgs {
  const void* a;         // [M, K] activations (the kernel's T)
  const int32_t* cols;   // sorted outlier columns
  const int32_t* count;  // [1] on the device
  int first;             // list entries before this one are done
  const int8_t* cb;      // [N, K] weight codes
  const float* col;      // [N] weight row scales
  int64_t M, N, K;
  int splits;            // outlier_mma_splits()
  float* partials;       // [splits, M, N] when splits > 1
  void* out;             // [M, N], added to
  const float* sub_a = nullptr;  // [kOutlierCapacity, M] gathered activations, or null
  const float* sub_w = nullptr;  // [kOutlierCapacity, N] gathered dequantized weights, or null
};
bool outlier_mma_applies(FloatKind activation_kind, int64_t M, int64_t N, int64_t K);
int outlier_mma_splits(int64_t M, int64_t N, int sm_count);
cudaError_t launch_outlier_mma(const OutlierMmaArgs& args, FloatKind activation_kind, FloatKind out_kind,
                               cudaStream_t stream);

// out[i] = float(in[i]) for n elements of kind.
cudaError_t launch_to_float(FloatKind kind, const void* in, int64_t n, float* out, cudaStream_t stream);

// ---------------------------------------------------------------- model steps

// A decode step's rotary embedding and KV-cache write: q [B, T, H * hd] rotated into q_out
// [B, H, T, hd]; k [B, T, KV * hd] rotated, and v copied, into the caches [B, KV, S, hd] at
// positions [T] (device int64, each in [0, S): the kernel traps otherwise). cos and signed_sin
// [T, hd] (the sine's first half negated). Every tensor contiguous, of one float type.
struct RotaryCacheArgs {
  const void *q, *k, *v, *cos, *signed_sin;
  const int64_t* positions;
  void *q_out, *k_cache, *v_cache;
  int64_t B, T, H, KV, hd, S;
};
cudaError_t launch_rotary_cache(FloatKind kind, const RotaryCacheArgs& args, cudaStream_t stream);

// RMSNorm of x [rows, D]: out = weight * (x * rsqrt(mean(x^2) + eps)) in fp32, rounded once;
// weight [D], all of one float type, contiguous. With `residual` (else null), x + residual rounded
// to the type is normalized in x's place and written to `sum` [rows, D]. A programmatic launch on
// sm_90 (device).
struct RmsNormArgs {
  const void *x, *weight;
  void* out;
  int64_t rows, D;
  float eps;
  const void* residual = nullptr;
  void* sum = nullptr;
};
cudaError_t launch_rms_norm(FloatKind kind, const RmsNormArgs& args, int device, cudaStream_t stream);

// out = silu(gate) * up over n elements of one float type, each result rounded as ATen rounds it.
struct SiluMulArgs {
  const void *gate, *up;
  void* out;
  int64_t n;
};
cudaError_t launch_silu_mul(FloatKind kind, const SiluMulArgs& args, int device, cudaStream_t stream);

}  // namespace llmint8::cuda
