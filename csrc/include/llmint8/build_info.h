#pragma once

#include <string>
#include <vector>

namespace llmint8 {

// How this copy of the library was built.
struct BuildInfo {
  std::string version;             // e.g. "0.1.0"
  bool cuda;                       // CUDA kernels compiled in
  std::string cuda_architectures;  // CMake's list, e.g. "80-real,90-real,90-virtual"
  std::string torch_version;       // LibTorch headers the library was built against
  bool sentencepiece;              // sentencepiece .model tokenizers compiled in
  bool fused_sm90_gemm;            // the CUTLASS Hopper GEMM with its fused epilogue compiled in
  // The CUDA product backends compiled in, in the order they are tried (cuda/scaled_product.cpp):
  // "name: when it applies".
  std::vector<std::string> cuda_product_backends;
  std::string cpu_gemv_isa;        // CPU int8 GEMV variant this machine runs, detected at run time:
                                   // "avx512_vnni", "avx_vnni" or "plain"
};

BuildInfo build_info();

}  // namespace llmint8
