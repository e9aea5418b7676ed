// safetensors files, as Python's safetensors package reads and writes them (llmint8_models).
#pragma once

#include <llmint8/checkpoint.h>

#include <string>

namespace llmint8 {

// Writes tensors (any device; stored from the CPU) to a .safetensors file.
void save_safetensors(const std::string& path, const TensorMap& tensors);

// Reads a .safetensors file into CPU tensors. Validates the header, every
// dtype, shape and offset against the file size; errors name the key or offset.
TensorMap load_safetensors(const std::string& path);

}  // namespace llmint8
