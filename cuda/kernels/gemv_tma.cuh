// The decode-size layer op (one or two rows) on sm_90, with the weight rows brought into shared
// memory by the TMA unit: each warp keeps a ring of `stages` 4 KB pieces of its rows in flight
// (cp.async.bulk onto an mbarrier a piece), so the bytes in flight no longer depend on registers.
// gemv_fused streamed rows through registers (2 KB a warp in flight at most, one DRAM round trip
// a row after the row's start) and reached 2.5-2.75 TB/s on an H200 at 12288 x 4096 (Nsight
// Compute: latency-bound). Here one block an SM holds 16 warps x 3 pieces (192 KB) in flight, and
// the first pieces of every warp are requested before the prologue (quantize_in_block, shared
// with gemv_fused), so the stream runs under it. The outlier columns' bytes are read from the
// pieces in shared memory: no gather from L2 after a row.
#pragma once

#include "cuda/kernels/gemv_fused.cuh"

namespace llmint8::cuda {

constexpr int kTmaGemvWarps = 16;     // one block an SM
constexpr int kTmaGemvPiece = 4096;   // bytes of a weight row one copy brings
constexpr int kTmaGemvMinStages = 2;  // pieces a warp in flight; fewer fit: gemv_fused takes the layer
constexpr int kTmaGemvMaxStages = 4;
// Shared memory the kernel declares statically (row stats, barriers, the prologue's warp maxima
// and scan storage) stays below this; the ring and the prologue's arrays get the rest.
constexpr size_t kTmaGemvStaticSmem = 3072;  // (ptxas: 2816-2944 bytes on sm_90)

struct TmaGemvParams {
  FusedGemvParams op;  // l2_ahead and reread_columns unused
  int stages;          // pieces in flight a warp, kTmaGemvMinStages..kTmaGemvMaxStages
};

// Dynamic shared memory: the ring (stages pieces a warp), then quantize_in_block's arrays.
inline size_t tma_gemv_smem_bytes(int rows, int64_t K, bool outliers, int stages) {
  return static_cast<size_t>(kTmaGemvWarps) * stages * kTmaGemvPiece + fused_gemv_smem_bytes(rows, K, outliers);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void barrier_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // visible to the TMA unit
}
// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global `src` to shared `dst`
// by the TMA unit under the L2 `policy`; `bar` completes its phase once they have landed.
__device__ __forceinline__ void copy_bulk_async(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                                                uint64_t policy) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar)), "l"(policy)
      : "memory");
}
__device__ __forceinline__ void barrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  } while (done == 0);
}
#endif

template <typename T, int ROWS>
__global__ void __launch_bounds__(kTmaGemvWarps * 32, 1) gemv_tma_kernel(TmaGemvParams tp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int WARPS = kTmaGemvWarps;
  static_assert(ROWS >= 1 && ROWS <= kFusedGemvMaxRows, "1 or 2 rows");
  const FusedGemvParams& p = tp.op;
  const int stages = tp.stages;
  extern __shared__ __align__(128) uint8_t dynamic_smem[];
  __shared__ float row_stat[ROWS];
  __shared__ uint64_t full[WARPS][kTmaGemvMaxStages];  // a barrier a ring slot

  const int64_t K = p.K, N = p.N, vectors = K / 16;
  const int rows = p.rows;  // <= ROWS; the loops below run to ROWS (unrolled) and skip the rest
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const size_t ring_bytes = static_cast<size_t>(WARPS) * stages * kTmaGemvPiece;
  uint8_t* ring = dynamic_smem + static_cast<size_t>(warp) * stages * kTmaGemvPiece;
  uint32_t* bits = reinterpret_cast<uint32_t*>(dynamic_smem + ring_bytes);
  int8_t* codes = reinterpret_cast<int8_t*>(dynamic_smem + ring_bytes + fused_gemv_bitmask_bytes(K));
  uint16_t* list = reinterpret_cast<uint16_t*>(codes + rows * K);
  const int64_t row_stride = static_cast<int64_t>(gridDim.x) * WARPS;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * WARPS + warp;
  const T* x = static_cast<const T*>(p.x);

  // The warp's stream: its rows n = first_row + j * row_stride, each in pieces of kTmaGemvPiece
  // bytes (the last one shorter); piece i goes to slot i % stages. Lane 0 requests them.
  const int64_t pieces_per_row = (K + kTmaGemvPiece - 1) / kTmaGemvPiece;
  const int64_t my_rows = first_row < N ? (N - first_row + row_stride - 1) / row_stride : 0;
  const int64_t pieces = my_rows * pieces_per_row;
  const uint64_t policy = weight_stream_policy(false);  // evict-first: each byte is read once
  const auto request = [&](int64_t i) {
    const int64_t j = i / pieces_per_row, lo = (i - j * pieces_per_row) * kTmaGemvPiece;
    const int slot = static_cast<int>(i % stages);
    copy_bulk_async(ring + static_cast<size_t>(slot) * kTmaGemvPiece, p.b + (first_row + j * row_stride) * K + lo,
                    static_cast<uint32_t>(min(static_cast<int64_t>(kTmaGemvPiece), K - lo)), &full[warp][slot],
                    policy);
  };
  // The weights are parameters, which the kernel ahead does not write: requested before the wait.
  if (lane == 0) {
    for (int s = 0; s < stages; ++s) barrier_init(&full[warp][s]);
    for (int64_t i = 0; i < min(static_cast<int64_t>(stages), pieces); ++i) request(i);
  }
  __syncwarp();
  wait_for_prior_grid();
  allow_dependent_launch();  // a programmatic launch after this one may start its requests

  const int32_t outlier_count = quantize_in_block<T, ROWS, WARPS>(p, bits, codes, list, row_stat);
  // The first 32 listed columns' activations, one column a lane, held for every row.
  const int32_t held_col = lane < outlier_count ? list[lane] : -1;
  float held_x[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) held_x[r] = held_col >= 0 && r < rows ? to_float(x[r * K + held_col]) : 0.f;

  const int4* a4 = reinterpret_cast<const int4*>(codes);
  int64_t i = 0;  // the warp's piece
  for (int64_t n = first_row; n < N; n += row_stride) {
    const float col_n = p.col[n];
    int32_t acc[ROWS] = {};
    float outlier_sum[ROWS] = {};
    int32_t next = lane;  // the lane's next entry of the outlier list: lane, lane + 32, ...
    for (int64_t lo = 0; lo < K; lo += kTmaGemvPiece, ++i) {
      const int slot = static_cast<int>(i % stages);
      const int64_t end = min(K, lo + kTmaGemvPiece), chunks = (end - lo) / 16;
      const uint8_t* piece = ring + static_cast<size_t>(slot) * kTmaGemvPiece;
      barrier_wait(&full[warp][slot], static_cast<uint32_t>(i / stages) & 1u);
      // The exact int32 product of the codes with the piece (outlier columns' codes are zero). A
      // whole piece without bounds tests, so that its shared-memory loads go out together.
      const int4* w4 = reinterpret_cast<const int4*>(piece);
      const auto product = [&](int64_t c) {
        const int4 w = w4[c];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          if (r > 0 && r >= rows) break;  // (rows >= 1: no test for the first)
          const int4 av = a4[r * vectors + lo / 16 + c];
          acc[r] = __dp4a(av.x, w.x, acc[r]);
          acc[r] = __dp4a(av.y, w.y, acc[r]);
          acc[r] = __dp4a(av.z, w.z, acc[r]);
          acc[r] = __dp4a(av.w, w.w, acc[r]);
        }
      };
      constexpr int kSteps = kTmaGemvPiece / (16 * 32);  // 16-byte chunks a lane in a whole piece
      if (chunks == kSteps * 32) {
#pragma unroll
        for (int u = 0; u < kSteps; ++u) product(lane + u * 32);
      } else {
        for (int64_t c = lane; c < chunks; c += 32) product(c);
      }
      // The listed columns inside the piece (the list is in order: each lane's entries too).
      for (; next < outlier_count; next += 32) {
        const int64_t column = list[next];
        if (column >= end) break;
        const float wk = static_cast<float>(reinterpret_cast<const int8_t*>(piece)[column - lo]);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          if (r < rows) outlier_sum[r] += (next == lane ? held_x[r] : to_float(x[r * K + column])) * wk;
        }
      }
      __syncwarp();  // every lane is done with the slot: lane 0 refills it
      if (lane == 0 && i + stages < pieces) {
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // our reads before the TMA's writes
        request(i + stages);
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      if (r >= rows) break;  // (rows is the same in every lane)
      for (int offset = 16; offset > 0; offset /= 2) {
        acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
        outlier_sum[r] += __shfl_xor_sync(0xffffffffu, outlier_sum[r], offset);
      }
    }
    // Lane r writes row r: scales, outlier term and bias in fp32, rounded once.
    if (lane < rows) {
      int32_t total = 0;
      float term = 0.f;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        total = r == lane ? acc[r] : total;
        term = r == lane ? outlier_sum[r] * (col_n / 127.f) : term;
      }
      store_scaled_product(p.out, p.out_kind, N, lane, n, total, row_stat[lane], col_n, term, p.bias, p.bias_kind);
    }
  }  // rows of this warp
#endif
}

}  // namespace llmint8::cuda
