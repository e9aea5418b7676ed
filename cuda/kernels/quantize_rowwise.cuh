// Row-wise (and column-wise) absmax quantization with outlier-column detection, for any
// number of rows (the decode sizes have their own one-launch kernel: quantize_small_m.cuh).
#pragma once

#include "cuda/kernels/common.cuh"

#include <cub/block/block_scan.cuh>

namespace llmint8::cuda {

constexpr int kFindBlock = 256;

// Grid: (column blocks, row chunks). A thread takes V consecutive columns over a chunk of
// rows (coalesced 16-byte loads along the row) and flags those with |a| >= threshold in some
// row. Flags only go 0 -> 1. The last block to finish (a ticket taken after a fence) lists
// the flagged columns in order into cols / count and clears mask and ticket for the next call.
template <typename T, int V, bool VECTOR>
__global__ void __launch_bounds__(kFindBlock)
    find_outlier_columns_kernel(const T* __restrict__ a, int64_t rows, int64_t K, int64_t rows_per_chunk,
                                float threshold, uint8_t* __restrict__ mask, uint32_t* __restrict__ ticket,
                                int32_t* __restrict__ cols, int32_t* __restrict__ count) {
  const int64_t k = (static_cast<int64_t>(blockIdx.x) * kFindBlock + threadIdx.x) * V;
  if (k < K) {  // VECTOR: K % V == 0, so all V columns exist
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
    const int64_t r1 = min(rows, r0 + rows_per_chunk);
    bool flag[V] = {};
    for (int64_t r = r0; r < r1; ++r) {
      float x[V];
      if constexpr (VECTOR) {
        load_floats<T, V, true>(a + r * K + k, x);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) x[e] = k + e < K ? to_float(a[r * K + k + e]) : 0.f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e) flag[e] |= fabsf(x[e]) >= threshold;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (flag[e]) mask[k + e] = 1;
    }
  }
  // The classic last-block pattern: every block's flags are visible before its ticket.
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(ticket, 1u) == gridDim.x * gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  using Scan = cub::BlockScan<int32_t, kFindBlock>;
  __shared__ typename Scan::TempStorage scan_storage;
  constexpr int kPerThread = 16;
  int32_t written = 0;
  for (int64_t base = 0; base < K; base += static_cast<int64_t>(kFindBlock) * kPerThread) {
    const int64_t k0 = base + static_cast<int64_t>(threadIdx.x) * kPerThread;
    uint32_t bits = 0;
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) {
      if (k0 + e < K && __ldcg(mask + k0 + e) != 0) bits |= 1u << e;
    }
    int32_t offset = 0, round_total = 0;
    Scan(scan_storage).ExclusiveSum(__popc(bits), offset, round_total);
    for (int e = 0; e < kPerThread; ++e) {
      if ((bits >> e) & 1u) {
        cols[written + offset++] = static_cast<int32_t>(k0 + e);
        mask[k0 + e] = 0;
      }
    }
    written += round_total;
    __syncthreads();  // scan_storage is reused by the next round
  }
  if (threadIdx.x == 0) {
    *count = written;
    *ticket = 0u;
  }
}

// One block per row: absmax over the kept columns, then the codes. The outlier list becomes a
// bitmask in shared memory (K / 8 bytes). V elements per 16-byte load when VECTOR.
template <typename T, int BLOCK, int V, bool VECTOR>
__global__ void __launch_bounds__(BLOCK)
    quantize_rows_kernel(const T* __restrict__ a, int64_t K, const int32_t* __restrict__ cols,
                         const int32_t* __restrict__ count, int8_t* __restrict__ q, float* __restrict__ stats) {
  extern __shared__ uint32_t outlier_bits[];
  const bool masked = cols != nullptr;
  if (masked) outlier_bitmask<BLOCK>(outlier_bits, (K + 31) / 32, 0, cols, count);
  const int64_t row = blockIdx.x;
  const T* arow = a + row * K;
  int8_t* qrow = q + row * K;
  const auto load = [&](int64_t k, float (&x)[V]) {
    if constexpr (VECTOR) {
      load_floats<T, V, true>(arow + k, x);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) x[e] = k + e < K ? to_float(arow[k + e]) : 0.f;
    }
  };
  float m = 0.f;
  for (int64_t k = static_cast<int64_t>(threadIdx.x) * V; k < K; k += static_cast<int64_t>(BLOCK) * V) {
    float x[V];
    load(k, x);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (!masked || !bit_set(outlier_bits, k + e)) m = absmax_combine(m, fabsf(x[e]));
    }
  }
  m = block_absmax<BLOCK>(m);
  const float scale = code_scale(m);
  if (threadIdx.x == 0) stats[row] = m;
  for (int64_t k = static_cast<int64_t>(threadIdx.x) * V; k < K; k += static_cast<int64_t>(BLOCK) * V) {
    float x[V];
    load(k, x);
    int8_t c[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const bool skip = scale == 0.f || (masked && bit_set(outlier_bits, k + e));
      c[e] = skip ? int8_t{0} : quantize_value(x[e], scale);
    }
    if constexpr (VECTOR) {
      store_codes<V>(qrow + k, c);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (k + e < K) qrow[k + e] = c[e];
      }
    }
  }
}

// Thread = one column: absmax down the column, then its codes. The block's outlier columns
// come from the list as a bitmask over its BLOCK columns.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    quantize_columns_kernel(const T* __restrict__ a, int64_t rows, int64_t K, const int32_t* __restrict__ cols,
                            const int32_t* __restrict__ count, int8_t* __restrict__ q,
                            float* __restrict__ col_stats) {
  __shared__ uint32_t outlier_bits[BLOCK / 32];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * BLOCK;
  outlier_bitmask<BLOCK>(outlier_bits, BLOCK / 32, k0, cols, count);
  const int64_t k = k0 + threadIdx.x;
  if (k >= K) return;
  const bool outlier = bit_set(outlier_bits, threadIdx.x);
  float m = 0.f;
  if (!outlier) {
    for (int64_t r = 0; r < rows; ++r) m = absmax_combine(m, fabsf(to_float(a[r * K + k])));
  }
  col_stats[k] = m;
  const float scale = code_scale(m);
  for (int64_t r = 0; r < rows; ++r) q[r * K + k] = scale == 0.f ? int8_t{0} : quantize_value(to_float(a[r * K + k]), scale);
}

__global__ void dequantize_rows_kernel(const int8_t* __restrict__ q, const float* __restrict__ stats, int64_t K,
                                       int64_t total, float* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __fdiv_rn(static_cast<float>(q[i]) * stats[i / K], 127.f);
  }
}

}  // namespace llmint8::cuda
