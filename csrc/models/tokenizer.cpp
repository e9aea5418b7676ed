// The tokenizers: llama2.c (its file is read by io/llama2c.cpp) and sentencepiece, and the factory.
#include <llmint8/models/llama2c.h>
#include <llmint8/models/tokenizer.h>

#include "io/mapped_file.h"
#include "untrusted.h"

#include <c10/util/Exception.h>

#include <cctype>
#include <cstdio>
#include <limits>
#ifdef LLMINT8_WITH_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace llmint8::models {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

#ifdef LLMINT8_WITH_SENTENCEPIECE
class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    // Read here rather than by sentencepiece: regular files only (untrusted.h).
    const io::MappedFile file(path);
    const auto status = processor_.LoadFromSerializedProto(std::string(file.data(), file.size()));
    if (!status.ok()) untrusted::fail(path, "cannot load it as a sentencepiece model: " + status.ToString());
  }
  int64_t vocab_size() const override { return processor_.GetPieceSize(); }
  int64_t bos_id() const override { return processor_.bos_id(); }
  int64_t eos_id() const override { return processor_.eos_id(); }
  std::vector<int64_t> encode(const std::string& text, bool bos, bool eos) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(text, &ids);
    TORCH_CHECK_VALUE(status.ok(), "sentencepiece: cannot encode the prompt: ", status.ToString());
    std::vector<int64_t> out;
    if (bos && bos_id() >= 0) out.push_back(bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    if (eos && eos_id() >= 0) out.push_back(eos_id());
    return out;
  }
  std::string decode(int64_t previous, int64_t token) const override {
    TORCH_CHECK_INDEX(token >= 0 && token < vocab_size(), "tokenizer: token id ", std::to_string(token),
                      " is outside the vocabulary of ", std::to_string(vocab_size()));
    std::string piece = processor_.IdToPiece(static_cast<int>(token)), byte;
    if (byte_piece(piece, byte)) return byte;
    if (processor_.IsControl(static_cast<int>(token))) return "";
    // "▁" (U+2581) marks a word start: a space.
    static const std::string kSpace = "\xe2\x96\x81";
    for (size_t at = piece.find(kSpace); at != std::string::npos; at = piece.find(kSpace, at + 1)) {
      piece.replace(at, kSpace.size(), " ");
    }
    if (previous == bos_id() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    return piece;
  }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};
#endif

}  // namespace

bool byte_piece(const std::string& piece, std::string& out) {
  // Exactly "<0x" + two hex digits + ">" (sscanf's %X would also take signs and spaces).
  const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>' || !hex(piece[3]) || !hex(piece[4])) {
    return false;
  }
  out = std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  return true;
}

std::string Tokenizer::decode(const std::vector<int64_t>& tokens, int64_t previous) const {
  std::string text;
  for (int64_t t : tokens) {
    text += decode(previous, t);
    previous = t;
  }
  return text;
}

std::vector<int64_t> Llama2cTokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int64_t> tokens;
  if (bos) tokens.push_back(kBos);
  auto lookup = [&](const std::string& s) {
    const auto it = ids_.find(s);
    return it == ids_.end() ? int64_t{-1} : it->second;
  };
  if (!text.empty()) {
    const int64_t space = lookup(" ");  // llama2.c's dummy prefix: text starts as if after a space
    if (space >= 0) tokens.push_back(space);
  }
  // One token per UTF-8 character where the vocabulary has it, else its bytes (<0xNN> = byte + 3).
  for (size_t i = 0; i < text.size();) {
    size_t n = 1;
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead >= 0xF0) n = 4;
    else if (lead >= 0xE0) n = 3;
    else if (lead >= 0xC0) n = 2;
    n = std::min(n, text.size() - i);
    const std::string ch = text.substr(i, n);
    const int64_t id = lookup(ch);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      if (!byte_pieces_) {
        char byte[8];
        std::snprintf(byte, sizeof(byte), "0x%02X", lead);
        untrusted::fail(file_, std::string("the text's character at byte ") + std::to_string(i) + " (lead byte " + byte + ")",
                "in the vocabulary, or spelled by byte pieces <0x00>..<0xFF> at ids 3 to 258",
                "neither (the vocabulary has no byte pieces)");
      }
      for (unsigned char b : ch) tokens.push_back(static_cast<int64_t>(b) + 3);
    }
    i += n;
  }
  // Merge the adjacent pair whose union scores highest, until none is in the vocabulary.
  while (true) {
    float best = -std::numeric_limits<float>::infinity();
    int64_t best_id = -1;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      const int64_t id = lookup(pieces_[tokens[i]] + pieces_[tokens[i + 1]]);
      if (id >= 0 && scores_[id] > best) {
        best = scores_[id];
        best_id = id;
        best_at = i;
      }
    }
    if (best_id < 0) break;
    tokens[best_at] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  if (eos) tokens.push_back(kEos);
  return tokens;
}

std::string Llama2cTokenizer::decode(int64_t previous, int64_t token) const {
  TORCH_CHECK_INDEX(token >= 0 && token < vocab_size(), "tokenizer '", file_, "': token id ", std::to_string(token),
                    " is outside the vocabulary of ", std::to_string(vocab_size()));
  std::string piece = pieces_[token], byte;
  if (previous == kBos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  return byte_piece(piece, byte) ? byte : piece;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (ends_with(path, ".model")) {
#ifdef LLMINT8_WITH_SENTENCEPIECE
    return std::make_unique<SentencePieceTokenizer>(path);
#else
    TORCH_CHECK_VALUE(false, "'", path, "' is a sentencepiece model, and this build of llmint8 has no sentencepiece ",
                      "(install libsentencepiece-dev and rebuild)");
#endif
  }
  return std::make_unique<Llama2cTokenizer>(Llama2cTokenizer::load(path));
}

}  // namespace llmint8::models
