// libFuzzer target: model.safetensors.index.json (tensor name -> shard file in the folder).
#include "fuzz_check.h"
#include "io/readers.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using llmint8::fuzz::kFile;
  llmint8::fuzz::expect_named_error("'" + kFile + "'", [&] {
    const auto shards = llmint8::models::parse_shard_index(std::string(reinterpret_cast<const char*>(data), size), kFile);
    for (const auto& [key, shard] : shards) {
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") std::abort();  // the contract
    }
  });
  return 0;
}
