// The fused LLM.int8() product on Hopper (sm_90a), composed from CUTLASS: int8 x int8 on the
// warpgroup tensor cores with int32 accumulators that never leave registers, and an epilogue
// that applies the row and column scales and adds either the bias or a source tensor:
//   D[m, n] = acc[m, n] * row[m] * col[n] / 127^2 + (with_source ? C[m, n] : bias[n])
// The source is the output buffer itself, pre-filled with the outlier term and the bias.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include <type_traits>

namespace llmint8::cuda::sm90 {

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

template <typename ElementOut, bool kWithSource, typename TileShape_, typename ClusterShape_, typename KernelSchedule_,
          typename EpilogueSchedule_>
struct ScaledGemm {
  using TileShape = TileShape_;
  using ElementSource = std::conditional_t<kWithSource, ElementOut, void>;
  static constexpr int kAlignOut = 16 / sizeof(ElementOut);  // TMA moves 16-byte rows

  // Scales and bias are read one element at a time (alignment 1): any M and N.
  using RowScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, _0>, 1>;  // per m
  using ColScale = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>, 1>;  // per n
  using Bias = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>, 1>;      // per n, may be null
  using Scalar = fusion::Sm90ScalarBroadcast<float, Stride<_0, _0, _0>>;
  template <template <class> class Fn, typename Out = float>
  using Op = fusion::Sm90Compute<Fn, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;

  using AccTimesRow = fusion::Sm90EVT<Op<cutlass::multiplies>, RowScale, fusion::Sm90AccFetch>;
  using Scaled = fusion::Sm90EVT<Op<cutlass::multiplies>, ColScale, AccTimesRow>;
  // scaled / 127^2 + bias, then + C when there is a source (rounded once, to ElementOut, at the root)
  using PlusBias = fusion::Sm90EVT<Op<cutlass::homogeneous_multiply_add, std::conditional_t<kWithSource, float, ElementOut>>,
                                   Scaled, Scalar, Bias>;
  using Epilogue = std::conditional_t<
      kWithSource, fusion::Sm90EVT<Op<cutlass::plus, ElementOut>, PlusBias, fusion::Sm90SrcFetch<ElementOut>>, PlusBias>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape_,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, ElementSource, cutlass::layout::RowMajor,
      kAlignOut, ElementOut, cutlass::layout::RowMajor, kAlignOut, EpilogueSchedule_, Epilogue>::CollectiveOp;

  // A [M, K] row-major and B [N, K] row-major (= K x N column-major): both K-major, as int8 wgmma needs.
  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, int8_t,
      cutlass::layout::ColumnMajor, 16, int32_t, TileShape, ClusterShape_,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule_>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const int8_t* a, const int8_t* b, int M, int N, int K, const float* row,
                                            const float* col, const float* bias, void* out, int sm_count) {
    using K_ = typename Gemm::GemmKernel;
    const auto stride_a = cutlass::make_cute_packed_stride(typename K_::StrideA{}, make_shape(M, K, 1));
    const auto stride_b = cutlass::make_cute_packed_stride(typename K_::StrideB{}, make_shape(N, K, 1));
    const auto stride_d = cutlass::make_cute_packed_stride(typename K_::StrideD{}, make_shape(M, N, 1));
    auto* d = static_cast<ElementOut*>(out);
    constexpr float kInv127Squared = 1.0f / (127.0f * 127.0f);
    typename PlusBias::Arguments plus_bias{
        {{col, 0.f, {}}, {{row, 0.f, {}}, {}, {}}, {}},  // Scaled: col[n] * (row[m] * acc)
        {{kInv127Squared}, {}, {}},                     // 1/127^2
        {bias, 0.f, {}},                                 // bias (null: 0)
        {}};
    typename Epilogue::Arguments epilogue = [&] {
      if constexpr (kWithSource) {
        return typename Epilogue::Arguments{plus_bias, {}, {}};
      } else {
        return plus_bias;
      }
    }();
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = sm_count;
    return typename Gemm::Arguments{cutlass::gemm::GemmUniversalMode::kGemm,
                                    {M, N, K, 1},
                                    {a, stride_a, b, stride_b},
                                    {epilogue, kWithSource ? d : nullptr, stride_d, d, stride_d},
                                    hw};
  }
};

}  // namespace llmint8::cuda::sm90
