// One- and two-row LLM.int8() product: a warp per weight row streams it with 16-byte loads,
// 512 contiguous bytes per instruction (the access the HBM serves fastest), multiplies it
// exactly with dp4a against the activation codes, and finishes with the outlier term and the
// bias, like the small-M kernel whose parameters and overlap it shares.
#pragma once

#include "cuda/kernels/small_m_product.cuh"

namespace llmint8::cuda {

constexpr int kGemvWarps = 8;   // weight rows per block
constexpr int kGemvMaxRows = 2;
constexpr int kGemvUnroll = 4;  // 16-byte loads of the weight in flight per lane

// K % 16 == 0 and 16-byte aligned rows (the launcher checks).
template <int ROWS>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_dp4a_kernel(SmallMParams p) {
  __shared__ StagedOutliers<ROWS> outliers;
  const int tid = threadIdx.x, lane = tid % 32;
  const int64_t N = p.N, K = p.K;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kGemvWarps + tid / 32;
  const bool row_valid = n < N;
  const int8_t* w = p.b + (row_valid ? n : 0) * K;

  if (p.prefetch_bytes > 0) {
    if (row_valid) {
      for (int64_t off = static_cast<int64_t>(lane) * 128; off < min(K, static_cast<int64_t>(p.prefetch_bytes));
           off += 32 * 128) {
        prefetch_to_l2(w + off);
      }
    }
    wait_for_prior_grid();
  }
  const int32_t count = stage_outliers(p, ROWS, outliers);
  __syncthreads();
  if (!row_valid) return;

  const int64_t vectors = K / 16;
  const int4* w4 = reinterpret_cast<const int4*>(w);
  const int4* a4 = reinterpret_cast<const int4*>(p.a);
  int32_t acc[ROWS] = {};
  for (int64_t c0 = lane; c0 < vectors; c0 += 32 * kGemvUnroll) {
    int4 wv[kGemvUnroll], av[kGemvUnroll][ROWS];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {  // unconditional loads from clamped addresses: all in flight
      const int64_t c = c0 + u * 32;
      const bool in = c < vectors;
      const int4 wraw = __ldcs(w4 + (in ? c : 0));
      wv[u] = in ? wraw : make_int4(0, 0, 0, 0);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const int4 araw = __ldg(a4 + r * vectors + (in ? c : 0));
        av[u][r] = in ? araw : make_int4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        acc[r] = __dp4a(av[u][r].x, wv[u].x, acc[r]);
        acc[r] = __dp4a(av[u][r].y, wv[u].y, acc[r]);
        acc[r] = __dp4a(av[u][r].z, wv[u].z, acc[r]);
        acc[r] = __dp4a(av[u][r].w, wv[u].w, acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    for (int offset = 16; offset > 0; offset /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
  }
  // Lane r finishes row r.
  if (lane >= ROWS) return;
  int32_t total = 0;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) total = r == lane ? acc[r] : total;
  finish_output(p, lane, n, total, count, outliers);
}

}  // namespace llmint8::cuda
