// Tokenizers for the generation workflow: llama2.c tokenizer files and
// sentencepiece .model files (through Debian's libsentencepiece).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace llmint8::models {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual std::vector<int64_t> encode(const std::string& text, bool bos = true, bool eos = false) const = 0;
  // The text of `token` when it follows `previous`: a leading space after BOS is
  // dropped, <0xNN> byte pieces become their byte.
  virtual std::string decode(int64_t previous, int64_t token) const = 0;
  std::string decode(const std::vector<int64_t>& tokens, int64_t previous) const;
};

// out = the byte a "<0xNN>" piece stands for; false for any other piece.
bool byte_piece(const std::string& piece, std::string& out);

// A sentencepiece model for paths ending in ".model", a llama2.c tokenizer file otherwise.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace llmint8::models
