// Host helpers shared by the decode-size backends (backend_gemv_dp4a.cu, backend_small_m.cu):
// device traits, their kernel parameters, and the launch that may overlap the quantizer.
#pragma once

#include "cuda/kernels/small_m_product.cuh"
#include "cuda/scaled_product.h"

#include <array>

namespace llmint8::cuda {

struct DecodeDeviceTraits {
  int sm_count = 0;
  int major = 0;
};

inline const DecodeDeviceTraits& decode_traits(int device) {
  static std::array<DecodeDeviceTraits, 64> all{};
  static const DecodeDeviceTraits none{132, 0};
  if (device < 0 || device >= 64) return none;
  DecodeDeviceTraits& t = all[device];
  if (t.sm_count == 0) {
    cudaDeviceGetAttribute(&t.major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&t.sm_count, cudaDevAttrMultiProcessorCount, device);
  }
  return t;
}

// On sm_90 a decode kernel may start while the one before it (the quantizer, which allows it at
// once) still runs: it prefetches its weights, then waits for that grid before reading anything
// it wrote. Correct after any kernel: one that does not allow early starts delays it to its end.
inline bool decode_overlap(int device) { return decode_traits(device).major >= 9; }

constexpr int kDecodePrefetchBytes = 2048;  // of each weight row, pulled toward L2 while waiting

inline SmallMParams small_m_params(const ScaledProduct& p) {
  const bool o = p.outliers != nullptr;
  return SmallMParams{p.a,
                      p.row,
                      p.b,
                      p.col,
                      p.bias,
                      p.bias_kind,
                      o ? p.outliers->a : nullptr,
                      o ? p.outliers->kind : FloatKind::f32,
                      o ? p.outliers->cols : nullptr,
                      o ? p.outliers->count : nullptr,
                      p.out,
                      p.out_kind,
                      static_cast<int>(p.M),
                      p.N,
                      p.K,
                      decode_overlap(p.device) ? kDecodePrefetchBytes : 0};
}

template <typename Kernel>
cudaError_t launch_decode_kernel(Kernel kernel, unsigned grid, unsigned block, const SmallMParams& params,
                                 cudaStream_t stream) {
  if (params.prefetch_bytes == 0) {
    kernel<<<grid, block, 0, stream>>>(params);
    return cudaGetLastError();
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(block);
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, params);
}

}  // namespace llmint8::cuda
