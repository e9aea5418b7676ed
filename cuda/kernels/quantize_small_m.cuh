// Decode-size quantization in one launch: up to kSmallMRows rows, outlier columns found,
// listed and left out of the row stats, codes written, with no other kernel before or after.
#pragma once

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/small_m_product.cuh"

#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>

namespace llmint8::cuda {

constexpr int kSmallMQuantThreads = 512;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LLMINT8_HAS_CLUSTERS 1
#endif

// The load of V consecutive elements of T as one instruction (2 to 16 bytes).
template <int BYTES>
struct LoadWord;
template <>
struct LoadWord<2> {
  using type = unsigned short;
};
template <>
struct LoadWord<4> {
  using type = unsigned int;
};
template <>
struct LoadWord<8> {
  using type = uint2;
};
template <>
struct LoadWord<16> {
  using type = int4;
};

// Grid: one cluster of CLUSTER blocks (one plain block when CLUSTER == 1). Block b owns the
// columns [b * slice, (b + 1) * slice) of every row (slice a multiple of 32). A thread owns
// V whole columns at a time (one load of V elements a row: K % V == 0, rows aligned to it), so
// it knows at once whether they are outliers (any row at or above the threshold) and keeps its
// rows' absmax over the others in registers. The launcher picks the widest V that still gives
// every thread of the block columns: the work is a chain per thread, so threads left idle by
// wide loads made it slower (V = 8 left 448 of 512 threads idle at K = 4096: 20 us on an H200
// at M = 16). The blocks exchange their partial row maxima and outlier counts through
// distributed shared memory, then each writes its slice's codes and its outlier columns at
// its offset in the sorted list.
template <typename T, int CLUSTER, int V>
__global__ void __launch_bounds__(kSmallMQuantThreads, 1)
    quantize_small_m_kernel(const T* __restrict__ a, int M, int64_t K, int64_t slice, float threshold,
                            int8_t* __restrict__ q, float* __restrict__ stats, int32_t* __restrict__ cols,
                            int32_t* __restrict__ count) {
  constexpr int kWarps = kSmallMQuantThreads / 32;
  extern __shared__ uint32_t outlier_bits[];  // one bit per column of this block's slice
  __shared__ float warp_max[kWarps][kSmallMRows];
  __shared__ float block_max[kSmallMRows];     // read by the other blocks of the cluster
  __shared__ int32_t block_outliers;            // likewise
  __shared__ float row_stat[kSmallMRows];
  __shared__ int32_t list_offset, list_total;

  allow_dependent_launch();  // the product may start streaming its weights now
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int rank = blockIdx.x;  // the grid is the cluster: block rank == block index
  const int64_t k_begin = rank * slice, k_end = min(K, k_begin + slice);
  const int64_t words = slice / 32;
  const bool find_outliers = threshold > 0.f;
  for (int64_t w = tid; w < words; w += kSmallMQuantThreads) outlier_bits[w] = 0u;
  if (tid == 0) block_outliers = 0;
  __syncthreads();

  // Every row's V columns at k, loaded together as straight-line code (rows past M read row 0,
  // a valid address, and are ignored) so that the loads are in flight at once.
  using Raw = typename LoadWord<V * sizeof(T)>::type;
  Raw raw[kSmallMRows];
  const auto load_rows = [&](int64_t k) {
#pragma unroll
    for (int m = 0; m < kSmallMRows; ++m) {
      const int64_t r = m < M ? m : 0;
      raw[m] = __ldg(reinterpret_cast<const Raw*>(a + r * K + k));
    }
  };
  const auto element = [&](int m, int e) -> float { return to_float(reinterpret_cast<const T*>(&raw[m])[e]); };

  float row_max[kSmallMRows];
#pragma unroll
  for (int m = 0; m < kSmallMRows; ++m) row_max[m] = 0.f;
  for (int64_t k = k_begin + static_cast<int64_t>(tid) * V; k < k_end; k += static_cast<int64_t>(kSmallMQuantThreads) * V) {
    load_rows(k);
    uint32_t flags = 0;  // bit e: column k + e is an outlier
    if (find_outliers) {
#pragma unroll
      for (int m = 0; m < kSmallMRows; ++m) {
        if (m < M) {
#pragma unroll
          for (int e = 0; e < V; ++e) flags |= static_cast<uint32_t>(fabsf(element(m, e)) >= threshold) << e;
        }
      }
      if (flags != 0) atomicOr(&outlier_bits[(k - k_begin) >> 5], flags << ((k - k_begin) & 31));
    }
#pragma unroll
    for (int m = 0; m < kSmallMRows; ++m) {
      if (m < M) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          if (!((flags >> e) & 1u)) row_max[m] = absmax_combine(row_max[m], fabsf(element(m, e)));
        }
      }
    }
  }
  // This block's partial row maxima and outlier count.
#pragma unroll
  for (int m = 0; m < kSmallMRows; ++m) {
    if (m < M) {
      float v = row_max[m];
      for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
      if (lane == 0) warp_max[warp][m] = v;
    }
  }
  __syncthreads();
  if (find_outliers) {
    int32_t n = 0;
    for (int64_t w = tid; w < words; w += kSmallMQuantThreads) n += __popc(outlier_bits[w]);
    if (n != 0) atomicAdd(&block_outliers, n);
  }
  if (tid < M) {
    float v = 0.f;
    for (int w = 0; w < kWarps; ++w) v = absmax_combine(v, warp_max[w][tid]);
    block_max[tid] = v;
  }
  // Combine with the other blocks of the cluster.
  if constexpr (CLUSTER > 1) {
#ifdef LLMINT8_HAS_CLUSTERS
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    __shared__ float remote_max[CLUSTER][kSmallMRows];
    __shared__ int32_t remote_outliers[CLUSTER];
    cluster.sync();  // every block's block_max and block_outliers are final
    if (tid < CLUSTER * kSmallMRows) {  // one remote read per thread
      const int r = tid / kSmallMRows, m = tid % kSmallMRows;
      if (m < M) remote_max[r][m] = *cluster.map_shared_rank(&block_max[m], r);
      if (m == 0) remote_outliers[r] = *cluster.map_shared_rank(&block_outliers, r);
    }
    cluster.sync();  // remote reads done: no block leaves while another still reads its shared memory
    if (tid < M) {
      float v = 0.f;
      for (int r = 0; r < CLUSTER; ++r) v = absmax_combine(v, remote_max[r][tid]);
      row_stat[tid] = v;
    }
    if (tid == 0) {
      int32_t before = 0, total = 0;
      for (int r = 0; r < CLUSTER; ++r) {
        before += r < rank ? remote_outliers[r] : 0;
        total += remote_outliers[r];
      }
      list_offset = before;
      list_total = total;
    }
#else
    __trap();  // clusters exist from sm_90 on; the launcher never asks for them before
#endif
  } else {
    __syncthreads();
    if (tid < M) row_stat[tid] = block_max[tid];
    if (tid == 0) {
      list_offset = 0;
      list_total = block_outliers;
    }
  }
  __syncthreads();
  if (rank == 0) {
    if (tid < M) stats[tid] = row_stat[tid];
    if (tid == 0 && count != nullptr) *count = find_outliers ? list_total : 0;
  }

  // Codes of this block's slice.
  float scale[kSmallMRows];
#pragma unroll
  for (int m = 0; m < kSmallMRows; ++m) scale[m] = m < M ? code_scale(row_stat[m]) : 0.f;
  for (int64_t k = k_begin + static_cast<int64_t>(tid) * V; k < k_end; k += static_cast<int64_t>(kSmallMQuantThreads) * V) {
    const uint32_t flags = find_outliers ? (outlier_bits[(k - k_begin) >> 5] >> ((k - k_begin) & 31)) : 0u;
    load_rows(k);
#pragma unroll
    for (int m = 0; m < kSmallMRows; ++m) {
      if (m < M) {
        int8_t c[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const bool skip = scale[m] == 0.f || ((flags >> e) & 1u);
          c[e] = skip ? int8_t{0} : quantize_value(element(m, e), scale[m]);
        }
        store_codes<V>(q + m * K + k, c);
      }
    }
  }

  // This block's outlier columns, in order, at its offset in the list.
  if (!find_outliers || cols == nullptr) return;
  using Scan = cub::BlockScan<int32_t, kSmallMQuantThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  int32_t written = list_offset;
  for (int64_t base = 0; base < words; base += kSmallMQuantThreads) {
    const int64_t w = base + tid;
    const uint32_t bits = w < words ? outlier_bits[w] : 0u;
    int32_t offset = 0, round_total = 0;
    Scan(scan_storage).ExclusiveSum(__popc(bits), offset, round_total);
    for (int e = 0; e < 32; ++e) {
      if ((bits >> e) & 1u) cols[written + offset++] = static_cast<int32_t>(k_begin + w * 32 + e);
    }
    written += round_total;
    __syncthreads();
  }
}

}  // namespace llmint8::cuda
