// The tokenizer factory and the sentencepiece tokenizer.
#include <llmint8/llama2c.h>
#include <llmint8/tokenizer.h>

#include "untrusted.h"

#include <c10/util/Exception.h>

#include <cctype>
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
    const untrusted::MappedFile file(path);
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
