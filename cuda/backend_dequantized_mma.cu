// Product backend "dequantized_mma": the layer op at short prefill sizes (17 to 32 rows) with
// outliers, whatever their count: outlier flags, the rows quantized and dequantized again, the
// product of the weight codes and those rows on the tensor cores over K splits, then the splits
// added (kernels/dequantized_mma.cuh). sm_80 and newer, fp16 and bf16.
#include "cuda/kernels/dequantized_mma.cuh"
#include "cuda/scaled_product.h"
#include "cuda/small_m_launch.cuh"  // decode_traits

#include <algorithm>
#include <cstdint>

namespace llmint8::cuda {

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Columns of K a block takes, a multiple of `step` codes: K splits so that one wave of resident
// blocks (two a multiprocessor: the kernel's launch bounds) covers the weight, each block
// streaming about the same number of codes; fewer splits, fewer partial sums to add.
int64_t chunk_for(int64_t N, int64_t K, int64_t step, int sm_count) {
  const int64_t row_blocks = (N + kDmmaBlockRows - 1) / kDmmaBlockRows;
  const int64_t wanted = std::clamp<int64_t>((2 * sm_count + row_blocks - 1) / row_blocks, 1, K / step);
  return ((K + wanted - 1) / wanted + step - 1) / step * step;
}

// The product over one wave of resident blocks, then the reduction of its K splits; on sm_90
// both are programmatic launches that start while the kernel ahead of them runs.
template <typename T, int MT, int V, int DEPTH>
cudaError_t launch_product(DmmaParams params, const Scratch& scratch, int sm_count, bool overlap,
                           cudaStream_t stream) {
  const auto kernel = dequantized_mma_kernel<T, MT, V, DEPTH>;
  constexpr int64_t kStep = kDmmaPiece * V;
  constexpr int64_t kMaxShared = 48 * 1024;  // no opt-in needed
  constexpr int64_t kMaxChunk = (kMaxShared / (16 * MT * 2) - kDmmaPad) / kStep * kStep;
  params.chunk = std::min(kMaxChunk, chunk_for(params.N, params.K, kStep, sm_count));
  const int64_t row_blocks = (params.N + kDmmaBlockRows - 1) / kDmmaBlockRows;
  params.splits = static_cast<int>((params.K + params.chunk - 1) / params.chunk);
  params.partials =
      static_cast<float*>(scratch.get(sizeof(float) * static_cast<size_t>(params.splits * params.M * params.N)));
  const size_t smem = static_cast<size_t>(16 * MT) * (params.chunk + kDmmaPad) * sizeof(T);
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(params.splits));
  cudaError_t e = launch_may_overlap(kernel, grid, kDmmaThreads, smem, params, overlap, stream);
  if (e != cudaSuccess) return e;
  const int64_t quads = params.M * params.N / 4;
  return launch_may_overlap(dequantized_mma_reduce_kernel<T>,
                            dim3(static_cast<unsigned>((quads + kDmmaReduceThreads - 1) / kDmmaReduceThreads)),
                            kDmmaReduceThreads, 0, params, overlap, stream);
}

template <typename T>
cudaError_t launch_for(const DmmaParams& params, const Scratch& scratch, int sms, bool overlap, bool long_chunks,
                       cudaStream_t stream) {
  // 17 to 32 rows: two m-tiles.
  return long_chunks ? launch_product<T, 2, 2, 1>(params, scratch, sms, overlap, stream)
                     : launch_product<T, 2, 1, 2>(params, scratch, sms, overlap, stream);
}

}  // namespace

bool dequantized_mma_applies(const ScaledProduct& p) {
  const bool sixteen_bit = p.x_kind == FloatKind::f16 || p.x_kind == FloatKind::bf16;
  return p.x != nullptr && p.threshold > 0.f && sixteen_bit && p.out_kind == p.x_kind &&
         p.M >= kDequantizedMmaMinRows && p.M <= kDequantizedMmaMaxRows && decode_traits(p.device).major >= 8 &&
         p.K > 0 && p.K % kDmmaPiece == 0 && p.N % 8 == 0 && p.N < (int64_t{1} << 31) && p.K < (int64_t{1} << 31) &&
         (p.N + kDmmaBlockRows - 1) / kDmmaBlockRows <= 65535 && aligned16(p.x) && aligned16(p.b) &&
         aligned16(p.out);
}

cudaError_t dequantized_mma_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream) {
  void* act = scratch.get(static_cast<size_t>(p.M * p.K) * 2);
  auto* flags = p.threshold > 0.f ? static_cast<uint8_t*>(scratch.get(static_cast<size_t>(p.K))) : nullptr;
  auto* row_maxima =
      static_cast<float*>(scratch.get(sizeof(float) * static_cast<size_t>(p.M * dequantize_column_blocks(p.K))));
  cudaError_t e = launch_dequantize_activations(p.x_kind, p.x, p.M, p.K, p.threshold, flags, row_maxima, act, nullptr,
                                                FloatKind::f32, p.N, nullptr, stream);
  if (e != cudaSuccess) return e;
  const DmmaParams params{act, p.b, p.col, p.bias, p.bias_kind, p.out, nullptr, 0, static_cast<int>(p.M), p.N, p.K, 0};
  const int sms = decode_traits(p.device).sm_count;
  const bool overlap = decode_overlap(p.device);
  // Pieces a step: two (128 codes of a row a step, the loads of a row's whole line together) where
  // a block's chunk is at least 512 codes, one (two steps in flight) on shorter ones. On an H200
  // at 32 rows (graph replay, cold L2) two pieces took 4096 x 11008 from 29.5 to 27.7 us, 11008 x
  // 4096 from 30.3 to 32.0; 4096 x 4096 (chunks of 256) 20.0 with one (benchmarks/NOTES.md,
  // sixteenth session).
  const bool long_chunks = p.K % (2 * kDmmaPiece) == 0 && chunk_for(p.N, p.K, kDmmaPiece, sms) >= 512;
  if (p.x_kind == FloatKind::f16) return launch_for<__half>(params, scratch, sms, overlap, long_chunks, stream);
  return launch_for<__nv_bfloat16>(params, scratch, sms, overlap, long_chunks, stream);
}

}  // namespace llmint8::cuda
