// Launcher of the activation dequantization for the dequantized-activation product (see
// kernels/dequantize_activations.cuh).
#include "cuda/kernels/dequantize_activations.cuh"
#include "cuda/launchers.h"

namespace llmint8::cuda {

cudaError_t launch_dequantize_activations(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                          uint8_t* flags, void* act, const void* bias, FloatKind bias_kind, int64_t N,
                                          float* bias_f32, cudaStream_t stream) {
  if (kind == FloatKind::f32 || K % 8 != 0 || rows <= 0 || rows > 65535 ||
      (threshold > 0.f && (flags == nullptr || reinterpret_cast<uintptr_t>(flags) % 8 != 0)) ||
      reinterpret_cast<uintptr_t>(a) % 16 != 0 || reinterpret_cast<uintptr_t>(act) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const uint8_t* used_flags = threshold > 0.f ? flags : nullptr;
  return with_float_type(kind, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if constexpr (sizeof(T) != 2) {
      return cudaErrorInvalidValue;
    } else {
      const auto* x = static_cast<const T*>(a);
      if (used_flags != nullptr) {
        const auto blocks = static_cast<unsigned>((K + kFlagBlockColumns - 1) / kFlagBlockColumns);
        outlier_flags_kernel<T><<<blocks, kFlagBlock, 0, stream>>>(x, rows, K, threshold, flags);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
      }
      dequantize_rows_kernel<T><<<static_cast<unsigned>(rows), kDequantizeBlock, 0, stream>>>(
          x, K, used_flags, static_cast<T*>(act), bias, bias_kind, N, bias_f32);
      return cudaGetLastError();
    }
  });
}

}  // namespace llmint8::cuda
