// Host helpers shared by the decode-size backends (backend_gemv_dp4a.cu, backend_small_m.cu,
// backend_gemv_fused.cu): device traits, their kernel parameters, how much of each weight row
// to prefetch, and the launch that may overlap the kernel ahead.
#pragma once

#include "cuda/kernels/small_m_product.cuh"
#include "cuda/scaled_product.h"

#include <algorithm>
#include <array>
#include <cstdint>

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

// Bytes of each weight row a decode kernel pulls into L2 before loading it: the first 2 KB. H200,
// graph replay with every call on a weight L2 no longer holds, as in a model (bench_linear.py
// --graph): 2 KB was the fastest or within 2 % of it at every layer and M measured, against
// none and whole rows. Whole rows, the earlier rule where the rows ahead fit in L2, lost up to
// 19 % (11008 x 4096, M = 1: 20.6 us against 16.7); that rule had been chosen on replays of one
// weight that stayed in L2 between calls.
constexpr int64_t kDecodePrefetchBytes = 2048;
inline int decode_prefetch_bytes(int64_t K) { return static_cast<int>(std::min(K, kDecodePrefetchBytes)); }

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
                      decode_overlap(p.device) ? decode_prefetch_bytes(p.K) : 0};
}

// kernel<<<grid, block, smem, stream>>>(params), or with `overlap` a programmatic launch: the
// blocks may start (and prefetch their weights) before the kernel ahead of them has ended.
template <typename Kernel, typename Params>
cudaError_t launch_may_overlap(Kernel kernel, dim3 grid, unsigned block, size_t smem, const Params& params,
                               bool overlap, cudaStream_t stream) {
  if (!overlap) {
    kernel<<<grid, block, smem, stream>>>(params);
    return cudaGetLastError();
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(block);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, params);
}

template <typename Kernel>
cudaError_t launch_decode_kernel(Kernel kernel, unsigned grid, unsigned block, const SmallMParams& params,
                                 cudaStream_t stream) {
  return launch_may_overlap(kernel, grid, block, 0, params, params.prefetch_bytes > 0, stream);
}

}  // namespace llmint8::cuda
