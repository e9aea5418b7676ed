// Launcher of the fused Hopper product (torch-free; see launchers.h). Compiled for sm_90a
// only, in its own object library: the rest of the CUDA code keeps sm_80 and sm_90.
#include "cuda/kernels/int8_scaled_gemm_sm90.cuh"
#include "cuda/launchers.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <mutex>

namespace llmint8::cuda {

namespace {

using namespace cute;

// 128 x 128 output tiles, K in steps of 128 bytes, two consumer warpgroups, pairs of CTAs
// along N sharing the A tile through TMA multicast.
template <typename ElementOut, bool kWithSource>
using LargeTiles = sm90::ScaledGemm<ElementOut, kWithSource, Shape<_128, _128, _128>, Shape<_1, _2, _1>,
                                    cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                                    cutlass::epilogue::TmaWarpSpecializedCooperative>;

int sm_count(int device) {
  static std::array<int, 64> counts{};
  if (device < 0 || device >= 64) return 0;
  if (counts[device] == 0) {
    cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device);
  }
  return counts[device];
}

template <typename ElementOut, bool kWithSource>
cudaError_t run(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, const float* row, const float* col,
                const float* bias, void* out, cudaStream_t stream) {
  using Config = LargeTiles<ElementOut, kWithSource>;
  int device = 0;
  cudaGetDevice(&device);
  auto args = Config::arguments(a, b, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), row, col, bias,
                                out, sm_count(device));
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

template <bool kWithSource>
cudaError_t dispatch(FloatKind out_kind, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K,
                     const float* row, const float* col, const float* bias, void* out, cudaStream_t stream) {
  switch (out_kind) {
    case FloatKind::f16: return run<cutlass::half_t, kWithSource>(a, b, M, N, K, row, col, bias, out, stream);
    case FloatKind::bf16: return run<cutlass::bfloat16_t, kWithSource>(a, b, M, N, K, row, col, bias, out, stream);
    case FloatKind::f32: return run<float, kWithSource>(a, b, M, N, K, row, col, bias, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

bool scaled_gemm_sm90_applies(int device, const void* a, const void* b, const void* out, int64_t M, int64_t N,
                              int64_t K, FloatKind out_kind) {
  static std::array<int, 64> hopper{};  // 0 unknown, 1 sm_90, 2 other
  if (device < 0 || device >= 64) return false;
  if (hopper[device] == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    hopper[device] = (major == 9 && minor == 0) ? 1 : 2;
  }
  const int64_t out_align = out_kind == FloatKind::f32 ? 4 : 8;  // 16-byte output rows for TMA
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return hopper[device] == 1 && M > 0 && N > 0 && K > 0 && K % 16 == 0 && N % out_align == 0 && M < (1LL << 31) &&
         N < (1LL << 31) && aligned(a) && aligned(b) && aligned(out);
}

cudaError_t launch_scaled_gemm_sm90(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K,
                                    const float* row, const float* col, const float* bias, bool add_to_out,
                                    FloatKind out_kind, void* out, cudaStream_t stream) {
  return add_to_out ? dispatch<true>(out_kind, a, b, M, N, K, row, col, bias, out, stream)
                    : dispatch<false>(out_kind, a, b, M, N, K, row, col, bias, out, stream);
}

}  // namespace llmint8::cuda
