// Product backend "dequantized_mma": the layer op at short prefill sizes (17 to 64 rows) with
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

// How a product is cut: pieces of 64 codes a step, the K chunk of a block (its group's activation
// rows staged in 48 KB of shared memory: no opt-in needed), the K splits, the blocks of weight rows
// and the groups of 32 activation rows.
struct DmmaPlan {
  int pieces;
  int64_t chunk, splits, row_blocks, row_groups;
};

constexpr int kDmmaTiles = 2;  // a group of 32 activation rows: two m-tiles
constexpr int64_t kDmmaStagedBytes = 48 * 1024;

DmmaPlan plan_for(int64_t M, int64_t N, int64_t K, int sm_count) {
  const int64_t row_blocks = (N + kDmmaBlockRows - 1) / kDmmaBlockRows;
  // Past 32 rows, a block for each group of 32 rows on the same weight tile (more registers for
  // more m-tiles would leave one block a multiprocessor).
  const int64_t row_groups = (M + 16 * kDmmaTiles - 1) / (16 * kDmmaTiles);
  const int64_t tiles = row_blocks * row_groups;
  // K splits so that one wave of resident blocks (two a multiprocessor: the kernel's launch
  // bounds) covers the weight, each block streaming about the same number of codes.
  const auto wave_chunk = [&](int64_t step) {
    const int64_t wanted = std::clamp<int64_t>((2 * sm_count + tiles - 1) / tiles, 1, K / step);
    return ((K + wanted - 1) / wanted + step - 1) / step * step;
  };
  // Two pieces a step (128 codes of a row a step, the loads of a row's whole line together) where
  // a block's chunk is at least 512 codes, one (two steps in flight) on shorter ones. On an H200
  // at 32 rows (graph replay, cold L2) two pieces took 4096 x 11008 from 29.5 to 27.7 us, 11008 x
  // 4096 from 30.3 to 32.0; 4096 x 4096 (chunks of 256) 20.0 with one (benchmarks/NOTES.md,
  // sixteenth session).
  const int pieces = K % (2 * kDmmaPiece) == 0 && wave_chunk(kDmmaPiece) >= 512 ? 2 : 1;
  const int64_t step = int64_t{kDmmaPiece} * pieces;
  const int64_t max_chunk = (kDmmaStagedBytes / (16 * kDmmaTiles * 2) - kDmmaPad) / step * step;
  const int64_t chunk = std::min(max_chunk, wave_chunk(step));
  return {pieces, chunk, (K + chunk - 1) / chunk, row_blocks, row_groups};
}

// The product, then the reduction of its K splits; on sm_90 both are programmatic launches that
// start while the kernel ahead of them runs.
template <typename T, int V, int DEPTH>
cudaError_t launch_product(DmmaParams params, const DmmaPlan& plan, const Scratch& scratch, bool overlap,
                           cudaStream_t stream) {
  const auto kernel = dequantized_mma_kernel<T, kDmmaTiles, V, DEPTH>;
  params.chunk = plan.chunk;
  params.splits = static_cast<int>(plan.splits);
  params.partials =
      static_cast<float*>(scratch.get(sizeof(float) * static_cast<size_t>(plan.splits * params.M * params.N)));
  const size_t smem = static_cast<size_t>(16 * kDmmaTiles) * (plan.chunk + kDmmaPad) * sizeof(T);
  const dim3 grid(static_cast<unsigned>(plan.row_groups), static_cast<unsigned>(plan.row_blocks),
                  static_cast<unsigned>(plan.splits));
  cudaError_t e = launch_may_overlap(kernel, grid, kDmmaThreads, smem, params, overlap, stream);
  if (e != cudaSuccess) return e;
  const int64_t quads = params.M * params.N / 4;
  return launch_may_overlap(dequantized_mma_reduce_kernel<T>,
                            dim3(static_cast<unsigned>((quads + kDmmaReduceThreads - 1) / kDmmaReduceThreads)),
                            kDmmaReduceThreads, 0, params, overlap, stream);
}

template <typename T>
cudaError_t launch_for(const DmmaParams& params, const DmmaPlan& plan, const Scratch& scratch, bool overlap,
                       cudaStream_t stream) {
  return plan.pieces == 2 ? launch_product<T, 2, 1>(params, plan, scratch, overlap, stream)
                          : launch_product<T, 1, 2>(params, plan, scratch, overlap, stream);
}

// Within 1.25 waves of resident blocks. Where the staged rows cap the chunk (K past about 12800
// on 4096 weight rows, past about 4500 on 11008, half that past 32 rows) the splits, partial sums
// and waves grow, unmeasured: those shapes keep the paths after this one. (Two groups of rows
// and at most 65535 splits and blocks of weight rows: within the grid's limits.)
bool fits_a_wave(const ScaledProduct& p) {
  const int sms = decode_traits(p.device).sm_count;
  const DmmaPlan plan = plan_for(p.M, p.N, p.K, sms);
  return plan.row_groups * plan.row_blocks * plan.splits <= 5 * int64_t{sms} / 2;
}

}  // namespace

bool dequantized_mma_applies(const ScaledProduct& p) {
  const bool sixteen_bit = p.x_kind == FloatKind::f16 || p.x_kind == FloatKind::bf16;
  return p.x != nullptr && p.threshold > 0.f && sixteen_bit && p.out_kind == p.x_kind &&
         p.M >= kDequantizedMmaMinRows && p.M <= kDequantizedMmaMaxRows && decode_traits(p.device).major >= 8 &&
         p.K > 0 && p.K % kDmmaPiece == 0 && p.N % 8 == 0 && p.N < (int64_t{1} << 31) && p.K < (int64_t{1} << 31) &&
         aligned16(p.x) && aligned16(p.b) && aligned16(p.out) && fits_a_wave(p);
}

cudaError_t dequantized_mma_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream) {
  void* act = scratch.get(static_cast<size_t>(p.M * p.K) * 2);
  auto* flags = static_cast<uint8_t*>(scratch.get(static_cast<size_t>(p.K)));  // t > 0 here
  auto* row_maxima =
      static_cast<float*>(scratch.get(sizeof(float) * static_cast<size_t>(p.M * dequantize_column_blocks(p.K))));
  cudaError_t e = launch_dequantize_activations(p.x_kind, p.x, p.M, p.K, p.threshold, flags, row_maxima, act, nullptr,
                                                FloatKind::f32, p.N, nullptr, stream);
  if (e != cudaSuccess) return e;
  const DmmaParams params{act, p.b, p.col, p.bias, p.bias_kind, p.out, nullptr, 0, static_cast<int>(p.M), p.N, p.K, 0};
  const DmmaPlan plan = plan_for(p.M, p.N, p.K, decode_traits(p.device).sm_count);
  const bool overlap = decode_overlap(p.device);
  if (p.x_kind == FloatKind::f16) return launch_for<__half>(params, plan, scratch, overlap, stream);
  return launch_for<__nv_bfloat16>(params, plan, scratch, overlap, stream);
}

}  // namespace llmint8::cuda
