// The body shared by the per-dtype translation units of the fused Hopper product.
#pragma once

#include "cuda/kernels/int8_scaled_gemm_sm90.cuh"

namespace llmint8::cuda::sm90 {

// 128 x 128 output tiles, K in steps of 128 bytes, two consumer warpgroups, pairs of CTAs
// along N sharing the A tile through TMA multicast.
template <typename ElementOut, int PAIRS>
using LargeTiles = ScaledGemm<ElementOut, PAIRS, Shape<_128, _128, _128>, Shape<_1, _2, _1>,
                              cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                              cutlass::epilogue::TmaWarpSpecializedCooperative>;

// 64 x 64 output tiles, two consumer warpgroups taking turns (ping-pong: one's epilogue runs
// during the other's main loop), no cluster: for products too small to give 128 x 128 tiles to
// every SM (M = 32 to 512 on 4096-wide layers left most SMs idle).
template <typename ElementOut, int PAIRS>
using SmallTiles = ScaledGemm<ElementOut, PAIRS, Shape<_64, _64, _128>, Shape<_1, _1, _1>,
                              cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                              cutlass::epilogue::TmaWarpSpecialized>;

template <typename Config>
cudaError_t run_tiles(const GemmArgs& g, cudaStream_t stream) {
  auto args = Config::arguments(g.a, g.b, static_cast<int>(g.M), static_cast<int>(g.N), static_cast<int>(g.K), g.row,
                                g.col, g.bias, g.sub_a, g.sub_w, g.out, g.sm_count);
  typename Config::Gemm gemm;
  // The persistent scheduler without split-K or stream-K needs no workspace.
  if (Config::Gemm::get_workspace_size(args) != 0 || gemm.can_implement(args) != cutlass::Status::kSuccess) {
    return cudaErrorNotSupported;
  }
  if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) return cudaErrorLaunchFailure;
  const bool launched = gemm.run(stream) == cutlass::Status::kSuccess;
  const cudaError_t error = cudaGetLastError();
  return error != cudaSuccess ? error : (launched ? cudaSuccess : cudaErrorLaunchFailure);
}

// The same 128 x 128 tiles with the outlier pairs, each consumer warpgroup on a tile of its own
// (ping-pong): the pairs' 16 vector nodes made the epilogue cost 20-25 % of the cooperative GEMM,
// and here one warpgroup's epilogue runs during the other's main loop. On an H200 (fp16, 8
// outlier columns) it took 108.7 us against 131.7 at 1024 rows on 4096 x 11008, 160 against 192
// at 4096 rows on 4096 x 4096 (benchmarks/NOTES.md, nineteenth session).
template <typename ElementOut, int PAIRS>
using LargeTilesPingpong = ScaledGemm<ElementOut, PAIRS, Shape<_128, _128, _128>, Shape<_1, _2, _1>,
                                      cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                      cutlass::epilogue::TmaWarpSpecialized>;

template <typename ElementOut>
cudaError_t run_gemm(const GemmArgs& g, cudaStream_t stream) {
  return g.sub_a != nullptr ? run_tiles<LargeTilesPingpong<ElementOut, kEpilogueOutliers>>(g, stream)
                            : run_tiles<LargeTiles<ElementOut, 0>>(g, stream);
}

template <typename ElementOut>
cudaError_t run_gemm_small(const GemmArgs& g, cudaStream_t stream) {
  return g.sub_a != nullptr ? run_tiles<SmallTiles<ElementOut, kEpilogueOutliers>>(g, stream)
                            : run_tiles<SmallTiles<ElementOut, 0>>(g, stream);
}

}  // namespace llmint8::cuda::sm90
