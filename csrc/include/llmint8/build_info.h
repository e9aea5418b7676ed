#pragma once

#include <string>

namespace llmint8 {

// How this copy of the library was built.
struct BuildInfo {
  std::string version;             // e.g. "0.1.0"
  bool cuda;                       // CUDA kernels compiled in
  std::string cuda_architectures;  // CMake's list, e.g. "80-real,90-real,90-virtual"
  std::string torch_version;       // LibTorch headers the library was built against
  bool sentencepiece;              // sentencepiece .model tokenizers compiled in
  bool fused_sm90_gemm;            // the CUTLASS Hopper GEMM with its fused epilogue compiled in
};

BuildInfo build_info();

}  // namespace llmint8
