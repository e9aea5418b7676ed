// The LLM.int8() product for the prefill sizes that are bound by the weight's bytes (tens of rows),
// on Hopper (sm_90a), composed from CUTLASS's mixed-input GEMM: the int8 weight codes are
// converted to the activations' 16-bit type in registers and multiplied with the dequantized
// activations on the warpgroup tensor cores, fp32 accumulators, then
//   out[m, n] = acc[n, m] * col[n] / 127 + bias[n]
// The dequantized activations (dequantize_activations.cuh) are the outlier columns as they
// are and every other value as code * row stat / 127, so the outlier term needs no pass of its
// own and costs nothing however many outlier columns there are.
// CUTLASS converts its A operand in registers, so the weight is A here: the kernel computes
// out^T [N, M] = CB [N, K] x act^T, written column-major, which is out [M, N] row-major.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/gemm/kernel/tile_scheduler.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "cuda/sm90/dequantized_gemm_sm90.h"

#include <algorithm>
#include <cstdint>

namespace llmint8::cuda::sm90 {

using namespace cute;

template <typename Element>  // cutlass::half_t or cutlass::bfloat16_t: activations and output
struct DequantizedGemm {
  // 128 weight rows by 64 tokens a tile, K in steps of 128: the collective converts the next codes
  // with up to 7 of a step's MMAs in flight (3 with steps of 64). On an H200, with the split-K
  // below, 2 % faster than steps of 64 with CUTLASS's stream-K heuristic over the Llama-2-7B
  // layers at 32 and 128 rows (benchmarks/NOTES.md, fifteenth session).
  static constexpr int kRowsPerTile = 128, kTokensPerTile = 64;
  using TileShape = Shape<Int<kRowsPerTile>, Int<kTokensPerTile>, _128>;
  using ClusterShape = Shape<_1, _1, _1>;
  static constexpr int kAlign = 16 / sizeof(Element);

  using PerWeightRow = cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, _0>, 1>;
  using Scalar = cutlass::epilogue::fusion::Sm90ScalarBroadcast<float, Stride<_0, _0, _0>>;
  template <template <class> class Fn, typename Out = float>
  using Op = cutlass::epilogue::fusion::Sm90Compute<Fn, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using Scaled = cutlass::epilogue::fusion::Sm90EVT<Op<cutlass::multiplies>, PerWeightRow,
                                                    cutlass::epilogue::fusion::Sm90AccFetch>;
  // (col[n] * acc) * (1 / 127) + bias[n], rounded once to Element
  using Epilogue = cutlass::epilogue::fusion::Sm90EVT<Op<cutlass::homogeneous_multiply_add, Element>, Scaled, Scalar,
                                                     PerWeightRow>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::ColumnMajor, kAlign,
      Element, cutlass::layout::ColumnMajor, kAlign, cutlass::epilogue::TmaWarpSpecializedCooperative,
      Epilogue>::CollectiveOp;

  // CB [N, K] row-major and the activations [M, K] row-major (= K x M column-major): both K-major.
  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, Element,
      cutlass::layout::ColumnMajor, kAlign, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, cutlass::gemm::StreamKScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const DequantizedGemmArgs& g) {
    using K_ = typename Gemm::GemmKernel;
    const int M = static_cast<int>(g.M), N = static_cast<int>(g.N), K = static_cast<int>(g.K);
    const auto stride_w = cutlass::make_cute_packed_stride(typename K_::StrideA{}, make_shape(N, K, 1));
    const auto stride_x = cutlass::make_cute_packed_stride(typename K_::StrideB{}, make_shape(M, K, 1));
    const auto stride_out = cutlass::make_cute_packed_stride(typename K_::StrideD{}, make_shape(N, M, 1));
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = g.sm_count;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {N, M, K, 1},
        {g.cb, stride_w, static_cast<const Element*>(g.act), stride_x},
        {{{{g.col, 0.f, {}}, {}, {}}, {{1.0f / 127.0f}, {}, {}}, {g.bias, 0.f, {}}, {}},
         nullptr,
         stride_out,
         static_cast<Element*>(g.out),
         stride_out},
        hw};
    return args;
  }

  static cudaError_t run(const DequantizedGemmArgs& g, const Scratch& scratch, cudaStream_t stream) {
    auto args = arguments(g);
    // A prefill has few tiles (32 for 4096 weight rows): split K so that every SM streams weight,
    // each split's partial sums reduced through the workspace. More tiles than SMs: CUTLASS's
    // stream-K heuristic, which evens out the last wave (4096 x 11008 at 128 rows: 172 tiles on
    // 132 SMs, 45.2 us against 48.7 data-parallel).
    const int64_t tiles = ((g.N + kRowsPerTile - 1) / kRowsPerTile) * ((g.M + kTokensPerTile - 1) / kTokensPerTile);
    if (tiles < g.sm_count) {
      args.scheduler.decomposition_mode = cutlass::gemm::kernel::detail::DecompositionMode::SplitK;
      args.scheduler.splits = static_cast<int>(std::clamp<int64_t>(g.sm_count / std::max<int64_t>(tiles, 1), 1, 16));
    }
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorNotSupported;
    const size_t workspace_bytes = Gemm::get_workspace_size(args);
    void* workspace = workspace_bytes > 0 ? scratch.get(workspace_bytes) : nullptr;
    if (workspace_bytes > 0 && workspace == nullptr) return cudaErrorMemoryAllocation;
    if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return cudaErrorLaunchFailure;
    const bool launched = gemm.run(stream) == cutlass::Status::kSuccess;
    const cudaError_t error = cudaGetLastError();
    return error != cudaSuccess ? error : (launched ? cudaSuccess : cudaErrorLaunchFailure);
  }
};

}  // namespace llmint8::cuda::sm90
