// Launchers of the quantization kernels (torch-free; see launchers.h).
#include "cuda/kernels/quantize_rowwise.cuh"
#include "cuda/kernels/quantize_small_m.cuh"
#include "cuda/launchers.h"

#include <algorithm>
#include <array>

namespace llmint8::cuda {

namespace {

constexpr int kRowBlock = 256;
constexpr int kColumnBlock = 256;
constexpr int64_t kMaxGridY = 65535;
constexpr int kSmallMCluster = 8;  // blocks sharing the columns of a decode step on sm_90

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// 16-byte loads need rows that start on 16 bytes: K * sizeof(T) % 16 == 0 and an aligned base.
template <typename T>
bool vector_rows(const void* a, int64_t K) {
  return K % kPerVector<T> == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0;
}

// Columns a block of the decode quantizer owns: K split over the cluster, whole bitmask words.
int64_t small_m_slice(int64_t K, int cluster) { return ((K + cluster - 1) / cluster + 31) / 32 * 32; }

template <typename T, int CLUSTER, int V>
cudaError_t launch_small_m(const T* a, int64_t rows, int64_t K, float threshold, int8_t* q, float* stats,
                           int32_t* cols, int32_t* count, cudaStream_t stream) {
  const int64_t slice = small_m_slice(K, CLUSTER);
  const size_t smem = static_cast<size_t>(slice / 32) * sizeof(uint32_t);
  auto kernel = quantize_small_m_kernel<T, CLUSTER, V>;
  if (smem > 48 * 1024) {  // K past ~390,000 columns in one block: above the 48 KB default
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const int M = static_cast<int>(rows);
  if constexpr (CLUSTER == 1) {
    kernel<<<1, kSmallMQuantThreads, smem, stream>>>(a, M, K, slice, threshold, q, stats, cols, count);
    return cudaGetLastError();
  } else {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(CLUSTER);
    config.blockDim = dim3(kSmallMQuantThreads);
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = CLUSTER;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, kernel, a, M, K, slice, threshold, q, stats, cols, count);
  }
}

// Elements per load of the decode quantizer: the widest of 1, 2, 4, ... kPerVector<T> that the
// rows' alignment allows and that still leaves every thread of a block at least one group of
// the slice (an idle thread's share lands on the others' chains).
template <typename T>
int small_m_vector(const void* a, const int8_t* q, int64_t K, int64_t slice) {
  int v = 1;
  while (v < kPerVector<T>) {
    const int wider = 2 * v;
    const bool aligned = K % wider == 0 && reinterpret_cast<uintptr_t>(a) % (wider * sizeof(T)) == 0 &&
                         reinterpret_cast<uintptr_t>(q) % wider == 0;
    if (!aligned || slice / wider < kSmallMQuantThreads) break;
    v = wider;
  }
  return v;
}

template <typename T, int CLUSTER>
cudaError_t launch_small_m_vector(const T* a, int64_t rows, int64_t K, float threshold, int8_t* q, float* stats,
                                  int32_t* cols, int32_t* count, cudaStream_t stream) {
  switch (small_m_vector<T>(a, q, K, small_m_slice(K, CLUSTER))) {
    case 1:
      return launch_small_m<T, CLUSTER, 1>(a, rows, K, threshold, q, stats, cols, count, stream);
    case 2:
      return launch_small_m<T, CLUSTER, 2>(a, rows, K, threshold, q, stats, cols, count, stream);
    case 4:
      return launch_small_m<T, CLUSTER, 4>(a, rows, K, threshold, q, stats, cols, count, stream);
    default:
      if constexpr (kPerVector<T> == 8) {
        return launch_small_m<T, CLUSTER, 8>(a, rows, K, threshold, q, stats, cols, count, stream);
      }
      return cudaErrorInvalidValue;  // unreachable: 4-byte elements stop at V = 4
  }
}

}  // namespace

int small_m_quantize_cluster_blocks(int device, int64_t rows, int64_t K) {
  static std::array<int, 64> major{};
  if (device < 0 || device >= 64) return 1;
  if (major[device] == 0) cudaDeviceGetAttribute(&major[device], cudaDevAttrComputeCapabilityMajor, device);
  // Small inputs are one block's work: a cluster only adds its barriers.
  return major[device] >= 9 && rows * K >= 16384 ? kSmallMCluster : 1;
}

cudaError_t launch_quantize_small_m(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                    int8_t* q, float* stats, int32_t* cols, int32_t* count, int cluster_blocks,
                                    cudaStream_t stream) {
  if (rows < 1 || rows > kSmallMRows) return cudaErrorInvalidValue;
  if (cluster_blocks != 1 && cluster_blocks != kSmallMCluster) return cudaErrorInvalidValue;
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(a);
    return cluster_blocks == 1
               ? launch_small_m_vector<T, 1>(x, rows, K, threshold, q, stats, cols, count, stream)
               : launch_small_m_vector<T, kSmallMCluster>(x, rows, K, threshold, q, stats, cols, count, stream);
  });
}

cudaError_t launch_find_outlier_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, float threshold,
                                        uint8_t* mask, uint32_t* ticket, int32_t* cols, int32_t* count,
                                        cudaStream_t stream) {
  if (K == 0) return cudaMemsetAsync(count, 0, sizeof(int32_t), stream);
  // Enough row chunks to fill the GPU, each long enough to amortize its column loads; a grid
  // of at least one block even for zero rows, so that the last block still writes count.
  const int64_t rows_per_chunk = std::max<int64_t>(16, (rows + kMaxGridY - 1) / kMaxGridY);
  const unsigned chunks = static_cast<unsigned>(std::max<int64_t>(1, (rows + rows_per_chunk - 1) / rows_per_chunk));
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kPerVector<T>;
    const T* x = static_cast<const T*>(a);
    const dim3 grid(blocks_for(K, kFindBlock * V), chunks);
    if (vector_rows<T>(a, K)) {
      find_outlier_columns_kernel<T, V, true>
          <<<grid, kFindBlock, 0, stream>>>(x, rows, K, rows_per_chunk, threshold, mask, ticket, cols, count);
    } else {
      find_outlier_columns_kernel<T, V, false>
          <<<grid, kFindBlock, 0, stream>>>(x, rows, K, rows_per_chunk, threshold, mask, ticket, cols, count);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_quantize_rows(FloatKind kind, const void* a, int64_t rows, int64_t K, const int32_t* cols,
                                 const int32_t* count, int8_t* q, float* stats, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const size_t smem = cols != nullptr ? static_cast<size_t>((K + 31) / 32) * sizeof(uint32_t) : 0;
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kPerVector<T>;
    const T* x = static_cast<const T*>(a);
    const bool vector = vector_rows<T>(a, K) && reinterpret_cast<uintptr_t>(q) % 16 == 0;
    auto kernel = vector ? quantize_rows_kernel<T, kRowBlock, V, true> : quantize_rows_kernel<T, kRowBlock, 1, false>;
    if (smem > 48 * 1024) {
      const cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (e != cudaSuccess) return e;
    }
    kernel<<<static_cast<unsigned>(rows), kRowBlock, smem, stream>>>(x, K, cols, count, q, stats);
    return cudaGetLastError();
  });
}

cudaError_t launch_quantize_columns(FloatKind kind, const void* a, int64_t rows, int64_t K, const int32_t* cols,
                                    const int32_t* count, int8_t* q, float* col_stats, cudaStream_t stream) {
  if (K == 0) return cudaSuccess;
  return with_float_type(kind, [&](auto tag) {
    using T = decltype(tag);
    quantize_columns_kernel<T, kColumnBlock><<<blocks_for(K, kColumnBlock), kColumnBlock, 0, stream>>>(
        static_cast<const T*>(a), rows, K, cols, count, q, col_stats);
    return cudaGetLastError();
  });
}

cudaError_t launch_dequantize_rows(const int8_t* q, const float* stats, int64_t rows, int64_t K, float* out,
                                   cudaStream_t stream) {
  const int64_t total = rows * K;
  if (total == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(blocks_for(total, 256), 65535));
  dequantize_rows_kernel<<<grid, 256, 0, stream>>>(q, stats, K, total, out);
  return cudaGetLastError();
}

}  // namespace llmint8::cuda
