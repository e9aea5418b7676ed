// llama2.c checkpoint loader (mmap, every field validated) and tokenizer.
#include <llmint8/llama2c.h>

#include "nn/mapped_file.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <memory>

namespace llmint8::models {

namespace {

// Hugging Face's permutation of a q/k weight [rows, cols] from interleaved rotary
// pairs to rotate-half layout, per head.
at::Tensor permute_rotary(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

}  // namespace

LlamaForCausalLM load_llama2c(const std::string& path) {
  MappedFile file(path);
  constexpr uint64_t kHeader = 7 * sizeof(int32_t);
  TORCH_CHECK_VALUE(file.size() >= kHeader, "llama2.c checkpoint '", path, "' is ", std::to_string(file.size()),
                    " bytes, shorter than its 28-byte header");
  int32_t h[7];
  std::memcpy(h, file.data(), kHeader);
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? std::abs(static_cast<int64_t>(h[i])) : h[i];
    TORCH_CHECK_VALUE(v > 0 && v <= (1 << 20), "llama2.c checkpoint '", path, "': header field ", names[i],
                      " (offset ", std::to_string(4 * i), ") = ", std::to_string(h[i]),
                      " is out of range: not a llama2.c version-0 checkpoint?");
  }
  LlamaConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = std::abs(h[5]);
  c.max_seq_len = h[6];
  c.tie_embeddings = h[5] > 0;
  try {
    c.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "llama2.c checkpoint '", path, "': ", e.what_without_backtrace());
  }
  const int64_t D = c.dim, H = c.hidden_dim, L = c.n_layers, V = c.vocab_size, S = c.max_seq_len;
  const int64_t kv = c.n_kv_heads * c.head_dim(), hd = c.head_dim();
  // The float32 tensors in file order (legacy rotary tables are read past, not used).
  const std::vector<std::pair<std::string, std::vector<int64_t>>> layout = {
      {"token_embedding", {V, D}}, {"rms_att", {L, D}},     {"wq", {L, D, D}},     {"wk", {L, kv, D}},
      {"wv", {L, kv, D}},          {"wo", {L, D, D}},       {"rms_ffn", {L, D}},   {"w1", {L, H, D}},
      {"w2", {L, D, H}},           {"w3", {L, H, D}},       {"rms_final", {D}},    {"freq_cis_real", {S, hd / 2}},
      {"freq_cis_imag", {S, hd / 2}}};
  uint64_t floats = 0;
  for (const auto& [name, shape] : layout) floats += static_cast<uint64_t>(c10::multiply_integers(shape));
  if (!c.tie_embeddings) floats += static_cast<uint64_t>(V * D);
  const uint64_t expected = kHeader + floats * sizeof(float);
  TORCH_CHECK_VALUE(file.size() == expected, "llama2.c checkpoint '", path, "': the header (dim ", std::to_string(D),
                    ", hidden_dim ", std::to_string(H), ", n_layers ", std::to_string(L), ", vocab_size ",
                    std::to_string(h[5]), ", seq_len ", std::to_string(S), ") needs ", std::to_string(expected),
                    " bytes, the file has ", std::to_string(file.size()),
                    file.size() < expected ? " (truncated)" : " (trailing bytes)");

  std::map<std::string, at::Tensor> t;
  uint64_t offset = kHeader;
  auto take = [&](const std::string& name, const std::vector<int64_t>& shape) {
    const auto view = at::from_blob(const_cast<char*>(file.data()) + offset, shape, at::kFloat);
    t[name] = view.clone();  // copied out before the map is closed
    offset += static_cast<uint64_t>(view.numel()) * sizeof(float);
  };
  for (const auto& [name, shape] : layout) take(name, shape);
  if (!c.tie_embeddings) take("wcls", {V, D});

  LlamaForCausalLM model(c);
  auto params = model->named_parameters();
  torch::NoGradGuard no_grad;
  auto set = [&](const std::string& key, const at::Tensor& value) { params[key].copy_(value); };
  set("model.embed_tokens.weight", t["token_embedding"]);
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    set(p + "input_layernorm.weight", t["rms_att"][i]);
    set(p + "self_attn.q_proj.weight", permute_rotary(t["wq"][i], c.n_heads));
    set(p + "self_attn.k_proj.weight", permute_rotary(t["wk"][i], c.n_kv_heads));
    set(p + "self_attn.v_proj.weight", t["wv"][i]);
    set(p + "self_attn.o_proj.weight", t["wo"][i]);
    set(p + "post_attention_layernorm.weight", t["rms_ffn"][i]);
    set(p + "mlp.gate_proj.weight", t["w1"][i]);
    set(p + "mlp.down_proj.weight", t["w2"][i]);
    set(p + "mlp.up_proj.weight", t["w3"][i]);
  }
  set("model.norm.weight", t["rms_final"]);
  set("lm_head.weight", c.tie_embeddings ? t["token_embedding"] : t["wcls"]);
  return model;
}

Llama2cTokenizer Llama2cTokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  TORCH_CHECK_VALUE(in, "cannot open tokenizer '", path, "'");
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  int32_t max_len = 0;
  TORCH_CHECK_VALUE(size >= 4 && in.read(reinterpret_cast<char*>(&max_len), 4), "tokenizer '", path,
                    "' is shorter than its 4-byte header");
  TORCH_CHECK_VALUE(max_len > 0 && max_len <= 4096, "tokenizer '", path, "': max_token_length ",
                    std::to_string(max_len), " at offset 0 is out of range: not a llama2.c tokenizer file?");
  Llama2cTokenizer tok;
  uint64_t offset = 4;
  while (offset < size) {
    float score = 0.f;
    int32_t len = 0;
    TORCH_CHECK_VALUE(offset + 8 <= size, "tokenizer '", path, "': entry ", std::to_string(tok.pieces_.size()),
                      " at offset ", std::to_string(offset), " is truncated");
    in.read(reinterpret_cast<char*>(&score), 4);
    in.read(reinterpret_cast<char*>(&len), 4);
    TORCH_CHECK_VALUE(len >= 0 && len <= max_len && offset + 8 + len <= size, "tokenizer '", path, "': entry ",
                      std::to_string(tok.pieces_.size()), " at offset ", std::to_string(offset), " has length ",
                      std::to_string(len), " (max_token_length ", std::to_string(max_len), ", ",
                      std::to_string(size - offset - 8), " bytes left)");
    std::string piece(static_cast<size_t>(len), '\0');
    in.read(piece.data(), len);
    tok.ids_.emplace(piece, static_cast<int64_t>(tok.pieces_.size()));
    tok.pieces_.push_back(std::move(piece));
    tok.scores_.push_back(score);
    offset += 8 + static_cast<uint64_t>(len);
  }
  TORCH_CHECK_VALUE(tok.vocab_size() > kEos, "tokenizer '", path, "' has only ", std::to_string(tok.vocab_size()),
                    " entries");
  return tok;
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
  TORCH_CHECK_INDEX(token >= 0 && token < vocab_size(), "tokenizer: token id ", std::to_string(token),
                    " is outside the vocabulary of ", std::to_string(vocab_size()));
  std::string piece = pieces_[token], byte;
  if (previous == kBos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  return byte_piece(piece, byte) ? byte : piece;
}

}  // namespace llmint8::models
