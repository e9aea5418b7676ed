// The llama2.c file formats: checkpoints (mmap, every field validated) and tokenizer files.
#include <llmint8/checkpoint.h>
#include <llmint8/models/llama2c.h>

#include "io/mapped_file.h"
#include "io/readers.h"
#include "untrusted.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace llmint8::models {

namespace u = llmint8::untrusted;

namespace {

constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);
constexpr int64_t kMaxHeaderField = int64_t{1} << 20;  // what tells a llama2.c header from other files
constexpr int32_t kMaxPieceBytes = 4096;

// Little-endian fields at any alignment (memcpy: no unaligned loads).
template <typename T>
T read_at(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Hugging Face's permutation of a q/k weight [rows, cols] from interleaved rotary
// pairs to rotate-half layout, per head.
at::Tensor permute_rotary(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

}  // namespace

LlamaForCausalLM read_llama2c(const char* data, uint64_t size, const std::string& file) {
  if (size < kHeaderBytes) {
    u::fail(file, "its size", "at least the 28-byte header", std::to_string(size) + " bytes (truncated)");
  }
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  int32_t h[7];
  for (int i = 0; i < 7; ++i) {
    h[i] = read_at<int32_t>(data + 4 * i);
    const int64_t v = i == 5 ? std::abs(static_cast<int64_t>(h[i])) : h[i];  // vocab_size < 0: own classifier
    if (v < 1 || v > kMaxHeaderField) {
      u::fail(file, std::string("header field ") + names[i] + " (offset " + std::to_string(4 * i) + ")",
              "in [1, " + std::to_string(kMaxHeaderField) + "] (is this a llama2.c version-0 checkpoint?)",
              std::to_string(h[i]));
    }
  }
  LlamaConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = std::abs(static_cast<int64_t>(h[5]));
  c.max_seq_len = h[6];
  c.tie_embeddings = h[5] > 0;
  try {
    c.validate();
  } catch (const c10::Error& e) {
    u::fail(file, e.what_without_backtrace());
  }
  const int64_t D = c.dim, H = c.hidden_dim, L = c.n_layers, V = c.vocab_size, S = c.max_seq_len;
  const int64_t kv = c.n_kv_heads * c.head_dim(), hd = c.head_dim();
  // The float32 tensors in file order (the legacy rotary tables are read past, not used).
  std::vector<std::pair<std::string, std::vector<int64_t>>> layout = {
      {"token_embedding", {V, D}}, {"rms_att", {L, D}},     {"wq", {L, D, D}},     {"wk", {L, kv, D}},
      {"wv", {L, kv, D}},          {"wo", {L, D, D}},       {"rms_ffn", {L, D}},   {"w1", {L, H, D}},
      {"w2", {L, D, H}},           {"w3", {L, H, D}},       {"rms_final", {D}},    {"freq_cis_real", {S, hd / 2}},
      {"freq_cis_imag", {S, hd / 2}}};
  if (!c.tie_embeddings) layout.push_back({"wcls", {V, D}});
  uint64_t expected = kHeaderBytes;
  for (const auto& [name, shape] : layout) {
    uint64_t bytes = sizeof(float);
    for (int64_t d : shape) bytes = u::mul(bytes, static_cast<uint64_t>(d), file, "the size of tensor '" + name + "'");
    expected = u::add(expected, bytes, file, "the size the header implies");
  }
  if (size != expected) {
    u::fail(file, "its size",
            std::to_string(expected) + " bytes for the header's sizes (dim " + std::to_string(D) + ", hidden_dim " +
                std::to_string(H) + ", n_layers " + std::to_string(L) + ", n_heads " + std::to_string(c.n_heads) +
                ", n_kv_heads " + std::to_string(c.n_kv_heads) + ", vocab_size " + std::to_string(h[5]) +
                ", seq_len " + std::to_string(S) + ")",
            std::to_string(size) + " bytes" + (size < expected ? " (truncated)" : " (trailing bytes)"));
  }

  // Copied out of the bytes (no alignment assumed), under Hugging Face's names.
  TensorMap file_tensors, sd;
  u::allocating(file, "the weights (" + std::to_string(size) + " bytes)", [&] {
    uint64_t offset = kHeaderBytes;
    for (const auto& [name, shape] : layout) {
      auto t = at::empty(shape, at::kFloat);
      const uint64_t bytes = static_cast<uint64_t>(t.numel()) * sizeof(float);
      std::memcpy(t.data_ptr(), data + offset, bytes);
      file_tensors[name] = t;
      offset += bytes;
    }
    const auto& t = file_tensors;
    sd["model.embed_tokens.weight"] = t.at("token_embedding");
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      sd[p + "input_layernorm.weight"] = t.at("rms_att")[i];
      sd[p + "self_attn.q_proj.weight"] = permute_rotary(t.at("wq")[i], c.n_heads);
      sd[p + "self_attn.k_proj.weight"] = permute_rotary(t.at("wk")[i], c.n_kv_heads);
      sd[p + "self_attn.v_proj.weight"] = t.at("wv")[i];
      sd[p + "self_attn.o_proj.weight"] = t.at("wo")[i];
      sd[p + "post_attention_layernorm.weight"] = t.at("rms_ffn")[i];
      sd[p + "mlp.gate_proj.weight"] = t.at("w1")[i];
      sd[p + "mlp.down_proj.weight"] = t.at("w2")[i];
      sd[p + "mlp.up_proj.weight"] = t.at("w3")[i];
    }
    sd["model.norm.weight"] = t.at("rms_final");
    if (!c.tie_embeddings) sd["lm_head.weight"] = t.at("wcls");
  });
  // The model is no bigger than the file, whose size matched the header.
  auto model = u::allocating(file, "the model (" + std::to_string(c.parameter_count()) + " parameters)",
                             [&] { return LlamaForCausalLM(c); });
  try {
    load_state_dict(*model, sd);  // the shared validator: shapes, finite values, all or nothing
  } catch (const c10::Error& e) {
    u::fail(file, e.what_without_backtrace());
  }
  return model;
}

LlamaForCausalLM load_llama2c(const std::string& path) {
  const io::MappedFile file(path);
  return read_llama2c(file.data(), file.size(), path);
}

Llama2cTokenizer Llama2cTokenizer::load(const std::string& path) {
  const io::MappedFile file(path);
  return parse(file.data(), file.size(), path);
}

Llama2cTokenizer Llama2cTokenizer::parse(const char* data, uint64_t size, const std::string& file) {
  if (size < 4) u::fail(file, "its size", "at least the 4-byte header", std::to_string(size) + " bytes");
  const auto max_len = read_at<int32_t>(data);
  if (max_len < 1 || max_len > kMaxPieceBytes) {
    u::fail(file, "max_token_length (offset 0)",
            "in [1, " + std::to_string(kMaxPieceBytes) + "] (is this a llama2.c tokenizer file?)",
            std::to_string(max_len));
  }
  Llama2cTokenizer tok;
  tok.file_ = file;
  uint64_t offset = 4;
  while (offset < size) {
    const auto entry = [&] {
      return "entry " + std::to_string(tok.pieces_.size()) + " (offset " + std::to_string(offset) + ")";
    };
    if (static_cast<int64_t>(tok.pieces_.size()) >= LlamaConfig::kMaxVocab) {
      u::fail(file, "the number of entries", "at most " + std::to_string(LlamaConfig::kMaxVocab), "more");
    }
    const uint64_t left = size - offset;
    if (left < 8) u::fail(file, entry(), "8 bytes of score and length", std::to_string(left) + " bytes (truncated)");
    const auto score = read_at<float>(data + offset);
    const auto len = read_at<int32_t>(data + offset + 4);
    if (len < 0 || len > max_len || static_cast<uint64_t>(len) > left - 8) {
      u::fail(file, entry() + " length",
              "in [0, max_token_length = " + std::to_string(max_len) + "] and at most the " +
                  std::to_string(left - 8) + " bytes left",
              std::to_string(len));
    }
    if (!std::isfinite(score)) {
      char value[32];
      std::snprintf(value, sizeof(value), "%g", score);
      u::fail(file, entry() + " score", "finite", value);
    }
    std::string piece(data + offset + 8, static_cast<size_t>(len));
    tok.ids_.emplace(piece, static_cast<int64_t>(tok.pieces_.size()));
    tok.pieces_.push_back(std::move(piece));
    tok.scores_.push_back(score);
    offset += 8 + static_cast<uint64_t>(len);
  }
  if (tok.vocab_size() <= kEos) {
    u::fail(file, "the number of entries", "at least 3 (<unk>, BOS, EOS)", std::to_string(tok.vocab_size()));
  }
  tok.byte_pieces_ = tok.vocab_size() >= 3 + 256;
  for (int b = 0; b < 256 && tok.byte_pieces_; ++b) {
    std::string byte;
    tok.byte_pieces_ = byte_piece(tok.pieces_[3 + b], byte) && static_cast<unsigned char>(byte[0]) == b;
  }
  return tok;
}

}  // namespace llmint8::models
