// The readers of untrusted files, on bytes already in memory. The public loaders map a
// file (io/mapped_file.h) and call these; the fuzz targets (tests/fuzz) call them directly.
// `file` names the source in every error.
#pragma once

#include <llmint8/checkpoint.h>
#include <llmint8/config.h>
#include <llmint8/models/llama.h>

#include "models/registry.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace llmint8 {

// One tensor of a safetensors header: its bytes are [begin, end) of the data buffer.
struct SafetensorsEntry {
  std::string key;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

struct SafetensorsHeader {
  uint64_t data_start;                   // file offset of the data buffer
  std::vector<SafetensorsEntry> entries;  // in data order; they tile the buffer exactly
};

// The header of a safetensors file of `size` bytes, checked against that size.
SafetensorsHeader parse_safetensors_header(const char* data, uint64_t size, const std::string& file);
// The whole file: its tensors copied out into CPU tensors.
TensorMap read_safetensors(const char* data, uint64_t size, const std::string& file);
// The same checks, but the tensors are views of `data` (copied only where misaligned for their
// dtype): read-only, valid while data is, never to be written.
TensorMap view_safetensors(const char* data, uint64_t size, const std::string& file);

namespace models {

// A llama2.c checkpoint into a float32 CPU model.
LlamaForCausalLM read_llama2c(const char* data, uint64_t size, const std::string& file);

// What llmint8 reads from a Hugging Face config.json.
struct HfConfig {
  std::string model_type;
  ModelSpec model;                 // the family's reading of it (registry.h)
  std::optional<Int8Config> int8;  // an 8-bit checkpoint (bitsandbytes' or llmint8's): its settings
};
HfConfig parse_hf_config(const std::string& text, const std::string& file);

// model.safetensors.index.json: tensor name -> shard file name in the same folder.
std::map<std::string, std::string> parse_shard_index(const std::string& text, const std::string& file);

}  // namespace models

}  // namespace llmint8
