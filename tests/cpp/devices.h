// The devices the C++ suites run on: the CPU, and the GPU where there is one.
#pragma once

#include <ATen/Context.h>
#include <c10/core/Device.h>

#include <vector>

namespace llmint8::testing {

inline std::vector<c10::Device> devices() {
  std::vector<c10::Device> list{c10::Device(c10::kCPU)};
  if (at::globalContext().hasCUDA()) list.emplace_back(c10::kCUDA, 0);
  return list;
}

}  // namespace llmint8::testing
