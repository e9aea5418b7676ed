// llama2.c checkpoints and tokenizer files (format: ../shared/models/README.md).
#pragma once

#include <llmint8/models/llama.h>
#include <llmint8/models/tokenizer.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace llmint8::models {

// Loads a llama2.c "version 0" checkpoint (memory-mapped) into a float32 CPU
// model. Every header field and the file size are checked first; q/k weights are
// permuted from llama2.c's interleaved rotary pairs to Hugging Face's halves.
LlamaForCausalLM load_llama2c(const std::string& path);

// A llama2.c tokenizer: byte-level pieces merged greedily by score.
class Llama2cTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kBos = 1, kEos = 2;

  // Reads every entry of the file; errors name the path and the byte offset.
  static Llama2cTokenizer load(const std::string& path);
  // The same from the bytes of such a file; `file` names it in errors.
  static Llama2cTokenizer parse(const char* data, uint64_t size, const std::string& file);

  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return kBos; }
  int64_t eos_id() const override { return kEos; }
  // Characters missing from the vocabulary are spelled with the byte pieces <0x00>..<0xFF>
  // (ids 3 to 258); without those in the file, such a character is an error.
  std::vector<int64_t> encode(const std::string& text, bool bos = true, bool eos = false) const override;
  std::string decode(int64_t previous, int64_t token) const override;
  using Tokenizer::decode;

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int64_t> ids_;
  std::string file_;
  bool byte_pieces_ = false;  // ids 3 + b are the pieces <0xNN> of every byte b
};

}  // namespace llmint8::models
