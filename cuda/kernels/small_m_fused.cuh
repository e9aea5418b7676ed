// The whole decode-size layer op for 3 to 16 rows in one kernel: every block quantizes the
// activations into its shared memory (block_quantize.cuh, as gemv_fused does for one or two
// rows), lists their outlier columns there, then takes tiles of weight rows with small_m_mma's
// tile body (small_m_product.cuh), reading the codes from shared memory. The two-kernel path
// (quantize_small_m, then small_m_mma) spent most of its time on the quantizer's launch and its
// chain of round trips, not on the product (H200, 4096 x 4096, t=0: quantizer alone 7.0-9.2 us,
// product alone 6.9-7.9, the two 12.7-15.5; benchmarks/NOTES.md). The grid is one resident wave
// looping over the tiles, so each SM quantizes once; while it does, its first tile's weight rows
// are on their way into L2, and each tile pulls the next one's in while it streams.
#pragma once

#include "cuda/kernels/block_quantize.cuh"
#include "cuda/kernels/small_m_product.cuh"

namespace llmint8::cuda {

struct SmallMFusedParams {
  SmallMParams product;  // a_float: the activations [M, K] (quantized here); a, row, cols, count unused
  float threshold;
  int64_t code_stride;  // bytes between rows of codes in shared memory (small_m_fused_code_stride)
};

// Rows of codes 64 bytes past a multiple of 128 apart: the eight rows a warp's MMA fragments read
// at once (16 contiguous bytes a lane, four lanes a row) then fall in different banks.
__host__ __device__ inline int64_t small_m_fused_code_stride(int64_t K) { return (K + 127) / 128 * 128 + 64; }

// Dynamic shared memory of a block: the outlier bitmask, `rows` rows of codes, then (with a
// threshold) the list of outlier columns.
inline size_t small_m_fused_smem_bytes(int rows, int64_t K, bool outliers) {
  return shared_bitmask_bytes(K) + static_cast<size_t>(rows * small_m_fused_code_stride(K)) +
         (outliers ? static_cast<size_t>(K) * sizeof(int32_t) : 0);
}

// Whole weight rows [n0, n0 + BN) into L2 (the block's threads 128 bytes apart).
template <int BN>
__device__ __forceinline__ void prefetch_tile_to_l2(const SmallMParams& p, int64_t n0) {
  const int64_t lines = (p.K + 127) / 128;
  for (int64_t i = threadIdx.x; i < BN * lines; i += blockDim.x) {
    const int64_t n = n0 + i / lines;
    if (n < p.N) asm volatile("prefetch.global.L2 [%0];" ::"l"(p.b + n * p.K + (i % lines) * 128));
  }
}

// ROWS: 4, 8 or 16, at least p.M. G: 8-row groups of weight rows a tile.
template <typename T, int ROWS, int G>
__global__ void __launch_bounds__(kSmallMWarps * 32, 1) small_m_fused_kernel(SmallMFusedParams f) {
  constexpr int kThreads = kSmallMWarps * 32;
  constexpr int BN = 8 * G;
  constexpr int U = G == 2 ? 4 : 8;  // 64-byte chunks in flight a thread, as small_m_mma takes them
  constexpr bool UPPER = ROWS > 8;
  constexpr int kBatch = ROWS > 8 ? 1 : 2;  // activation chunks of every row loaded at once
  static_assert(ROWS == 4 || ROWS == 8 || ROWS == 16, "4, 8 or 16 rows");
  extern __shared__ __align__(16) uint8_t dynamic_smem[];
  __shared__ SmallMSums<BN> sums;
  __shared__ float row_stat[ROWS];
  const SmallMParams& p = f.product;
  const int64_t K = p.K, tiles = (p.N + BN - 1) / BN;
  uint32_t* bits = reinterpret_cast<uint32_t*>(dynamic_smem);
  int8_t* codes = reinterpret_cast<int8_t*>(dynamic_smem + shared_bitmask_bytes(K));  // [M][code_stride]
  int32_t* list = reinterpret_cast<int32_t*>(codes + p.M * f.code_stride);  // [K] at most, with a threshold

  // With a programmatic launch (sm_90) this runs before the kernel ahead has ended: prefetches
  // only until wait_for_prior_grid().
  prefetch_tile_to_l2<BN>(p, static_cast<int64_t>(blockIdx.x) * BN);
  wait_for_prior_grid();
  allow_dependent_launch();  // a programmatic launch after this one may start its prefetches

  quantize_rows_into_shared<T, ROWS, kThreads, kBatch>(static_cast<const T*>(p.a_float), p.M, K, f.threshold, bits,
                                                       codes, f.code_stride, row_stat);
  int32_t count = 0;
  if (f.threshold > 0.f) {
    count = list_outlier_columns<kThreads>(bits, (K + 31) / 32, list);  // ends with a barrier
  } else {
    __syncthreads();  // codes complete
  }
  const TileActivations act{codes, f.code_stride, row_stat, list, count};
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    if (tile + gridDim.x < tiles) prefetch_tile_to_l2<BN>(p, (tile + gridDim.x) * BN);
    small_m_tile<G, U, UPPER, true, true>(p, act, tile * BN, sums);
    __syncthreads();  // the tile's sums are read: the next tile may write them
  }
}

}  // namespace llmint8::cuda
