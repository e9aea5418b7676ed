// The fused LLM.int8() product on Hopper (sm_90a), composed from CUTLASS: int8 x int8 on the
// warpgroup tensor cores with int32 accumulators that never leave registers, and an epilogue
// (an epilogue visitor tree) that applies the row and column scales, adds the bias and, with
// PAIRS > 0, the first PAIRS outlier columns as outer products of gathered vectors:
//   D[m, n] = acc[m, n] * row[m] * col[n] / 127^2 + bias[n] + sum_{j < PAIRS} sub_a[j][m] * sub_w[j][n]
// (sub_a / sub_w as launch_gather_outlier_columns writes them, zero past the outlier count).
// The output is written once; outliers past PAIRS are added by a separate pass that does
// nothing when there are none.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "cuda/sm90/gemm_sm90.h"

#include <cstdint>
#include <type_traits>

namespace llmint8::cuda::sm90 {

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

template <typename ElementOut, int PAIRS, typename TileShape_, typename ClusterShape_, typename KernelSchedule_,
          typename EpilogueSchedule_>
struct ScaledGemm {
  using TileShape = TileShape_;
  static constexpr int kAlignOut = 16 / sizeof(ElementOut);  // TMA moves 16-byte rows

  // Vectors are read one element at a time (alignment 1): any M and N.
  using PerRow = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, _0>, 1>;  // indexed by m
  using PerCol = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>, 1>;  // indexed by n
  using Scalar = fusion::Sm90ScalarBroadcast<float, Stride<_0, _0, _0>>;
  template <template <class> class Fn, typename Out = float>
  using Op = fusion::Sm90Compute<Fn, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;

  using AccTimesRow = fusion::Sm90EVT<Op<cutlass::multiplies>, PerRow, fusion::Sm90AccFetch>;
  using Scaled = fusion::Sm90EVT<Op<cutlass::multiplies>, PerCol, AccTimesRow>;
  // scaled / 127^2 + bias, in fp32 (rounded to ElementOut here only when it is the root)
  template <typename Out>
  using PlusBias = fusion::Sm90EVT<Op<cutlass::homogeneous_multiply_add, Out>, Scaled, Scalar, PerCol>;

  // Inner + sum of J outer products sub_a[j][m] * sub_w[j][n], one fused multiply-add each;
  // only the outermost node rounds to ElementOut.
  template <int J, bool kRoot>
  struct WithPairs {
    using Inner = typename WithPairs<J - 1, false>::Tree;
    using Tree = fusion::Sm90EVT<Op<cutlass::homogeneous_multiply_add, std::conditional_t<kRoot, ElementOut, float>>,
                                 PerRow, PerCol, Inner>;
  };
  template <bool kRoot>
  struct WithPairs<0, kRoot> {
    using Tree = PlusBias<std::conditional_t<kRoot, ElementOut, float>>;
  };
  using Epilogue = typename WithPairs<PAIRS, true>::Tree;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape_,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, void, cutlass::layout::RowMajor, kAlignOut,
      ElementOut, cutlass::layout::RowMajor, kAlignOut, EpilogueSchedule_, Epilogue>::CollectiveOp;

  // A [M, K] row-major and B [N, K] row-major (= K x N column-major): both K-major, as int8 wgmma needs.
  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, int8_t,
      cutlass::layout::ColumnMajor, 16, int32_t, TileShape, ClusterShape_,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule_>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  template <int J, bool kRoot>
  static typename WithPairs<J, kRoot>::Tree::Arguments tree_arguments(const float* row, const float* col,
                                                                      const float* bias, const float* sub_a,
                                                                      const float* sub_w, int M, int N) {
    if constexpr (J == 0) {
      constexpr float kInv127Squared = 1.0f / (127.0f * 127.0f);
      return {{{col, 0.f, {}}, {{row, 0.f, {}}, {}, {}}, {}},  // Scaled: col[n] * (row[m] * acc)
              {{kInv127Squared}, {}, {}},                     // 1/127^2
              {bias, 0.f, {}},                                 // bias (null: 0)
              {}};
    } else {
      const int64_t j = J - 1;
      return {{sub_a + j * M, 0.f, {}},
              {sub_w + j * N, 0.f, {}},
              tree_arguments<J - 1, false>(row, col, bias, sub_a, sub_w, M, N),
              {}};
    }
  }

  static typename Gemm::Arguments arguments(const int8_t* a, const int8_t* b, int M, int N, int K, const float* row,
                                            const float* col, const float* bias, const float* sub_a,
                                            const float* sub_w, void* out, int sm_count) {
    using K_ = typename Gemm::GemmKernel;
    const auto stride_a = cutlass::make_cute_packed_stride(typename K_::StrideA{}, make_shape(M, K, 1));
    const auto stride_b = cutlass::make_cute_packed_stride(typename K_::StrideB{}, make_shape(N, K, 1));
    const auto stride_d = cutlass::make_cute_packed_stride(typename K_::StrideD{}, make_shape(M, N, 1));
    auto* d = static_cast<ElementOut*>(out);
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = sm_count;
    return typename Gemm::Arguments{cutlass::gemm::GemmUniversalMode::kGemm,
                                    {M, N, K, 1},
                                    {a, stride_a, b, stride_b},
                                    {tree_arguments<PAIRS, true>(row, col, bias, sub_a, sub_w, M, N), nullptr,
                                     stride_d, d, stride_d},
                                    hw};
  }
};

}  // namespace llmint8::cuda::sm90
