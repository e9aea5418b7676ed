// The prologue of the fused decode kernels (gemv_fused, small_m_fused): one block quantizes a
// few activation rows into its own shared memory, with no other kernel before or after. The
// rows are a few KB to 128 KB, read from L2 by every block: cheaper than a quantizer launch and
// the round trips of its codes through memory.
#pragma once

#include "cuda/kernels/common.cuh"

#include <cub/block/block_scan.cuh>

namespace llmint8::cuda {

// Whole 16-byte units of a bitmask of K columns: what follows it stays aligned.
__host__ __device__ inline size_t shared_bitmask_bytes(int64_t K) { return static_cast<size_t>((K + 127) / 128) * 16; }

// Steps 1 and 2 of the prologue, by the block's THREADS threads, for `rows` <= ROWS rows of x
// ([rows, K], 16-byte aligned rows, K % 16 == 0):
// 1. the outlier columns (any row at or above `threshold`, as quantize_small_m decides) into the
//    bitmask `bits`, and each row's absmax over the other columns into row_stat[rows];
// 2. the codes of every row into codes[m * code_stride + k] (outlier columns zero: their term
//    is computed in float).
// The activations go BATCH 16-byte chunks of every row at a time, every load issued before any
// is used: one chunk of one row at a time made each row's load wait for the previous row's
// flags (SASS), a chain of L2 round trips (12 at K = 11008 with two rows, where two rows took
// 6 us more than one on an H200). Ends with a barrier before step 2 only: the caller's next
// barrier publishes the codes.
template <typename T, int ROWS, int THREADS, int BATCH>
__device__ __forceinline__ void quantize_rows_into_shared(const T* x, int rows, int64_t K, float threshold,
                                                          uint32_t* bits, int8_t* codes, int64_t code_stride,
                                                          float* row_stat) {
  constexpr int kWarps = THREADS / 32;
  constexpr int V = kPerVector<T>;  // elements per 16-byte activation load
  __shared__ float warp_max[kWarps][ROWS];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t words = (K + 31) / 32;
  const bool find_outliers = threshold > 0.f;
  const int64_t step = static_cast<int64_t>(THREADS) * V;
  const auto load_batch = [&](int64_t k0, int4(&raw)[BATCH][ROWS]) {
#pragma unroll
    for (int i = 0; i < BATCH; ++i) {
#pragma unroll
      for (int m = 0; m < ROWS; ++m) {
        const int64_t k = k0 + i * step;
        raw[i][m] = load16_or_zero<false>(x + m * K + k, k < K && m < rows);
      }
    }
  };
  const auto element = [](const int4& raw, int e) { return to_float(reinterpret_cast<const T*>(&raw)[e]); };

  for (int64_t i = tid; i < words; i += THREADS) bits[i] = 0u;
  __syncthreads();
  float row_max[ROWS];
#pragma unroll
  for (int m = 0; m < ROWS; ++m) row_max[m] = 0.f;
  for (int64_t k0 = static_cast<int64_t>(tid) * V; k0 < K; k0 += BATCH * step) {
    int4 raw[BATCH][ROWS];
    load_batch(k0, raw);
#pragma unroll
    for (int i = 0; i < BATCH; ++i) {
      const int64_t k = k0 + i * step;
      if (k >= K) break;
      uint32_t flags = 0;  // bit e: column k + e is an outlier (V <= 8 and k % V == 0: one word)
      if (find_outliers) {
#pragma unroll
        for (int m = 0; m < ROWS; ++m) {
          if (m >= rows) break;
#pragma unroll
          for (int e = 0; e < V; ++e) flags |= static_cast<uint32_t>(fabsf(element(raw[i][m], e)) >= threshold) << e;
        }
        if (flags != 0) atomicOr(&bits[k >> 5], flags << (k & 31));
      }
#pragma unroll
      for (int m = 0; m < ROWS; ++m) {  // every row's absmax over its other columns
        if (m >= rows) break;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          if (!((flags >> e) & 1u)) row_max[m] = absmax_combine(row_max[m], fabsf(element(raw[i][m], e)));
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < ROWS; ++m) {
    float v = row_max[m];
    for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0) warp_max[warp][m] = v;
  }
  __syncthreads();  // bits and warp maxima final
  if (tid < rows) {
    float v = 0.f;
    for (int i = 0; i < kWarps; ++i) v = absmax_combine(v, warp_max[i][tid]);
    row_stat[tid] = v;
  }
  __syncthreads();  // row_stat visible

  float scale[ROWS];
#pragma unroll
  for (int m = 0; m < ROWS; ++m) scale[m] = m < rows ? code_scale(row_stat[m]) : 0.f;
  for (int64_t k0 = static_cast<int64_t>(tid) * V; k0 < K; k0 += BATCH * step) {
    int4 raw[BATCH][ROWS];
    load_batch(k0, raw);  // L1 hits mostly: step 1 read the same bytes
#pragma unroll
    for (int i = 0; i < BATCH; ++i) {
      const int64_t k = k0 + i * step;
      if (k >= K) break;
      const uint32_t flags = find_outliers ? bits[k >> 5] >> (k & 31) : 0u;
#pragma unroll
      for (int m = 0; m < ROWS; ++m) {
        if (m >= rows) break;
        int8_t c[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const bool skip = scale[m] == 0.f || ((flags >> e) & 1u);
          c[e] = skip ? int8_t{0} : quantize_value(element(raw[i][m], e), scale[m]);
        }
        store_codes<V>(codes + m * code_stride + k, c);
      }
    }
  }
}

// Step 3: the outlier columns of the bitmask (`words` words, final and visible to every thread)
// in order into list[], as Index (a block scan of the words' counts: thread i takes a contiguous
// run of words). Returns their number to every thread; ends with a barrier.
template <int THREADS, typename Index>
__device__ __forceinline__ int32_t list_outlier_columns(const uint32_t* bits, int64_t words, Index* list) {
  using Scan = cub::BlockScan<int32_t, THREADS>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int32_t listed;
  const int tid = threadIdx.x;
  const int64_t run = (words + THREADS - 1) / THREADS;
  const int64_t w_begin = min(words, tid * run), w_end = min(words, w_begin + run);
  int32_t mine = 0;
  for (int64_t w = w_begin; w < w_end; ++w) mine += __popc(bits[w]);
  int32_t at = 0, total = 0;
  Scan(scan_storage).ExclusiveSum(mine, at, total);
  for (int64_t w = w_begin; w < w_end; ++w) {
    for (uint32_t b = bits[w]; b != 0u; b &= b - 1u) list[at++] = static_cast<Index>(w * 32 + __ffs(static_cast<int>(b)) - 1);
  }
  if (tid == 0) listed = total;
  __syncthreads();
  return listed;
}

}  // namespace llmint8::cuda
