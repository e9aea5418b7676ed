// libFuzzer target: the llama2.c tokenizer reader, then encoding texts that need merges and
// byte pieces, and decoding what came out.
#include "fuzz_check.h"

#include <llmint8/models/llama2c.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using llmint8::fuzz::kFile;
  llmint8::fuzz::expect_named_error("'" + kFile + "'", [&] {
    const auto tok = llmint8::models::Llama2cTokenizer::parse(reinterpret_cast<const char*>(data), size, kFile);
    for (const char* text : {"Once upon a time", "\xff\xfe\xc3", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", ""}) {
      const auto ids = tok.encode(text, /*bos=*/true, /*eos=*/true);
      tok.decode(ids, llmint8::models::Llama2cTokenizer::kBos);
    }
    const int64_t shown = std::min<int64_t>(tok.vocab_size(), 600);  // every byte piece and some more
    for (int64_t id = 0; id < shown; ++id) tok.decode(llmint8::models::Llama2cTokenizer::kBos, id);
  });
  return 0;
}
