// Launcher of the activation dequantization for the dequantized-activation product (see
// kernels/dequantize_activations.cuh).
#include "cuda/kernels/dequantize_activations.cuh"
#include "cuda/launchers.h"

namespace llmint8::cuda {

int64_t dequantize_column_blocks(int64_t K) { return (K + kFlagBlockColumns - 1) / kFlagBlockColumns; }

cudaError_t launch_dequantize_activations(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                          uint8_t* flags, float* row_maxima, void* act, const void* bias,
                                          FloatKind bias_kind, int64_t N, float* bias_f32, cudaStream_t stream) {
  if (kind == FloatKind::f32 || K % 8 != 0 || rows <= 0 || rows > 65535 || row_maxima == nullptr ||
      (threshold > 0.f && (flags == nullptr || reinterpret_cast<uintptr_t>(flags) % 8 != 0)) ||
      reinterpret_cast<uintptr_t>(a) % 16 != 0 || reinterpret_cast<uintptr_t>(act) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  uint8_t* flags_or_null = threshold > 0.f ? flags : nullptr;
  return with_float_type(kind, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (sizeof(T) != 2) {
      return cudaErrorInvalidValue;
    } else {
      const auto* x = static_cast<const T*>(a);
      const int64_t column_blocks = dequantize_column_blocks(K);
      outlier_flags_kernel<T><<<static_cast<unsigned>(column_blocks), kFlagBlock, 0, stream>>>(
          x, rows, K, threshold, flags_or_null, row_maxima);
      const cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess) return e;
      const dim3 grid(static_cast<unsigned>((K + kDequantizeBlockColumns - 1) / kDequantizeBlockColumns),
                      static_cast<unsigned>(rows));
      dequantize_rows_kernel<T><<<grid, kDequantizeBlock, 0, stream>>>(
          x, K, row_maxima, column_blocks, flags_or_null, static_cast<T*>(act), bias, bias_kind, N, bias_f32);
      return cudaGetLastError();
    }
  });
}

}  // namespace llmint8::cuda
