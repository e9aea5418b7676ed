#include <llmint8/build_info.h>

#include "cpu/kernels/int8_gemv.h"

#include <torch/version.h>

namespace llmint8 {

#ifdef LLMINT8_WITH_CUDA
namespace cuda {
std::vector<std::string> product_backend_names();  // cuda/scaled_product.cpp
}
#endif

BuildInfo build_info() {
#ifdef LLMINT8_WITH_CUDA
  constexpr bool cuda = true;
  const std::string archs = LLMINT8_CUDA_ARCHS;
#else
  constexpr bool cuda = false;
  const std::string archs;
#endif
#ifdef LLMINT8_WITH_SENTENCEPIECE
  constexpr bool sentencepiece = true;
#else
  constexpr bool sentencepiece = false;
#endif
#ifdef LLMINT8_WITH_SM90_GEMM
  constexpr bool fused_sm90_gemm = true;
#else
  constexpr bool fused_sm90_gemm = false;
#endif
#ifdef LLMINT8_WITH_CUDA
  auto backends = cuda::product_backend_names();
#else
  std::vector<std::string> backends;
#endif
  return BuildInfo{LLMINT8_VERSION, cuda, archs, TORCH_VERSION, sentencepiece, fused_sm90_gemm, backends,
                   cpu::kernels::gemv_isa_name(cpu::kernels::best_gemv_isa())};
}

}  // namespace llmint8
