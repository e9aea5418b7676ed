// Untrusted files and bad input (issue 13): every loader fails with an error naming the
// file and the field, never crashes, hangs or aborts, and leaves nothing half loaded.
#include "catch_compat.h"
#include "reference.h"
#include "temp_dir.h"

#include <llmint8/models/hf.h>
#include <llmint8/models/llama2c.h>
#include <llmint8/llmint8.h>
#include <llmint8/models/safetensors.h>
#include <llmint8/models/tokenizer.h>

#include "io/readers.h"
#include "untrusted.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <thread>

using llmint8::testing::contains_all;
using llmint8::testing::error_message;
using llmint8::testing::TempDir;
namespace m = llmint8::models;

namespace {

void write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void put(std::string& bytes, T value) {
  bytes.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// A llama2.c checkpoint of the given header; the floats are small and finite unless `poison`
// names the index of one to replace.
std::string llama2c_file(const std::vector<int32_t>& header, int64_t poison_at = -1,
                         float poison = std::numeric_limits<float>::quiet_NaN()) {
  std::string bytes;
  for (int32_t h : header) put(bytes, h);
  const int64_t dim = header[0], hidden = header[1], layers = header[2], heads = header[3], kv_heads = header[4];
  const int64_t vocab = std::abs(header[5]), seq = header[6], head = dim / heads, kv = kv_heads * head;
  const int64_t floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * dim * hidden) + dim +
                         seq * head + (header[5] < 0 ? vocab * dim : 0);
  for (int64_t i = 0; i < floats; ++i) put(bytes, i == poison_at ? poison : 0.01f * static_cast<float>(i % 7 - 3));
  return bytes;
}

const std::vector<int32_t> kTinyHeader{8, 16, 1, 2, 2, 12, 4};  // dim, hidden, layers, heads, kv heads, vocab, seq

// A llama2.c tokenizer file of these pieces (scores 0).
std::string tokenizer_file(const std::vector<std::string>& pieces, int32_t max_len = 16) {
  std::string bytes;
  put(bytes, max_len);
  for (const auto& p : pieces) {
    put(bytes, 0.0f);
    put(bytes, static_cast<int32_t>(p.size()));
    bytes += p;
  }
  return bytes;
}

// A Hugging Face folder of a tiny random model: config.json and model.safetensors.
void write_hf_folder(const TempDir& dir, const std::string& config_json) {
  m::LlamaConfig c;
  c.dim = 8;
  c.hidden_dim = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.vocab_size = 12;
  c.max_seq_len = 4;
  m::LlamaForCausalLM model(c);
  llmint8::save_safetensors(dir / "model.safetensors", llmint8::state_dict(*model));
  write(dir / "config.json", config_json);
}

const std::string kTinyConfig =
    R"({"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 12, "max_position_embeddings": 4})";

// kTinyConfig with one field's JSON value replaced (or added).
std::string config_with(const std::string& key, const std::string& value) {
  auto j = nlohmann::json::parse(kTinyConfig);
  j[key] = nlohmann::json::parse(value);
  return j.dump();
}

// Runs f on a thread; false when it has not returned within the time (the process then exits:
// a blocked thread cannot be joined).
template <typename F>
bool returns_within(std::chrono::seconds limit, F&& f) {
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  std::thread([done, f]() mutable {
    try {
      f();
    } catch (...) {
    }
    done->set_value();
  }).detach();
  if (finished.wait_for(limit) == std::future_status::ready) return true;
  FAIL_CHECK("still blocked after the time limit");
  std::_Exit(1);
}

}  // namespace

TEST_CASE("size arithmetic is checked: sizes whose product wraps 64 bits are an error", "[untrusted]") {
  TempDir dir;
  // Every field passes the header's range check; the sizes they imply wrap 64-bit arithmetic.
  const std::vector<int32_t> wrapping{1048576, 1002587, 861359, 2048, 1, 2, 1};
  std::string bytes;
  for (int32_t h : wrapping) put(bytes, h);
  bytes.resize(2076, '\0');  // what the wrapped sum "expected"
  write(dir / "wrap.bin", bytes);
  CHECK(contains_all(error_message([&] { m::load_llama2c(dir / "wrap.bin"); }),
                     {"wrap.bin", "dim must be in [1, 65536], got 1048576"}));
  CHECK(contains_all(error_message([] { llmint8::untrusted::mul(uint64_t{1} << 40, uint64_t{1} << 30, "f.bin", "wq"); }),
                     {"'f.bin': wq must be a size below 2^64 bytes", "(overflow)"}));
  CHECK(contains_all(error_message([] { llmint8::untrusted::add(~uint64_t{0}, 1, "f.bin", "total"); }),
                     {"'f.bin': total must be", "(overflow)"}));
  // In range, but the file is shorter than the header says.
  write(dir / "short.bin", llama2c_file(kTinyHeader).substr(0, 500));
  CHECK(contains_all(error_message([&] { m::load_llama2c(dir / "short.bin"); }),
                     {"short.bin", "its size must be", "got 500 bytes (truncated)"}));
  write(dir / "tiny.bin", llama2c_file(kTinyHeader));
  CHECK(m::load_llama2c(dir / "tiny.bin")->config.dim == 8);
}

TEST_CASE("tokenizer: byte-fallback ids are checked against the vocabulary", "[untrusted]") {
  TempDir dir;
  // Fewer than 259 pieces: no byte pieces, so a character outside the vocabulary is an error.
  write(dir / "small.bin", tokenizer_file({"<unk>", "<s>", "</s>", " ", "a", "b"}));
  const auto small = m::Llama2cTokenizer::load(dir / "small.bin");
  CHECK(small.encode("ab") == std::vector<int64_t>{1, 3, 4, 5});
  CHECK(contains_all(error_message([&] { small.encode("a\xc3\xa9"); }),
                     {"small.bin", "character at byte 1 (lead byte 0xC3)", "no byte pieces"}));
  // 300 pieces, but ids 3..258 are not <0xNN>: byte ids would name the wrong pieces.
  std::vector<std::string> pieces{"<unk>", "<s>", "</s>"};
  for (int i = 0; i < 297; ++i) pieces.push_back("p" + std::to_string(i));
  write(dir / "no_bytes.bin", tokenizer_file(pieces));
  CHECK(contains_all(error_message([&] { m::Llama2cTokenizer::load(dir / "no_bytes.bin").encode("\xff"); }),
                     {"no_bytes.bin", "no byte pieces"}));
  // With byte pieces, the same text is spelled in bytes.
  pieces.resize(3);
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back(name);
  }
  write(dir / "bytes.bin", tokenizer_file(pieces));
  CHECK(m::Llama2cTokenizer::load(dir / "bytes.bin").encode("\xff", false) == std::vector<int64_t>{0xff + 3});
  // Entries: a length past the file and a non-finite score name the entry and its offset.
  auto bad = tokenizer_file({"<unk>", "<s>", "</s>"});
  std::memcpy(&bad[4 + 4], "\xff\xff\x00\x00", 4);
  write(dir / "len.bin", bad);
  CHECK(contains_all(error_message([&] { m::Llama2cTokenizer::load(dir / "len.bin"); }),
                     {"len.bin", "entry 0 (offset 4) length", "got 65535"}));
  bad = tokenizer_file({"<unk>", "<s>", "</s>"});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&bad[4], &nan, 4);
  write(dir / "score.bin", bad);
  CHECK(contains_all(error_message([&] { m::Llama2cTokenizer::load(dir / "score.bin"); }),
                     {"score.bin", "entry 0 (offset 4) score must be finite, got nan"}));
}

TEST_CASE("config.json: sizes past the limits are errors naming the field, before any allocation", "[untrusted]") {
  TempDir dir;
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"hidden_size", "2147483648"}, {"intermediate_size", "2147483648"}, {"vocab_size", "-1"},
           {"num_hidden_layers", "9223372036854775807"}, {"max_position_embeddings", "18446744073709551615"}}) {
    write_hf_folder(dir, config_with(key, value));
    const auto message = error_message([&] { m::load_hf_model(dir.path); });
    CHECK(contains_all(message, {"config.json", "field '" + key + "' must be an integer in [", "got " + value}));
  }
  // Within the limits, but far more than the checkpoint holds: refused before the model is allocated.
  write_hf_folder(dir, config_with("num_hidden_layers", "1024"));
  CHECK(contains_all(error_message([&] { m::load_hf_model(dir.path); }),
                     {"the checkpoint's tensors must be at least the", "values that config.json's sizes need"}));
  write_hf_folder(dir, kTinyConfig);
  CHECK(m::load_hf_model(dir.path).model->sizes().n_layers == 1);
}

TEST_CASE("an allocation failure is an error, not an abort", "[untrusted]") {
  // With libsentencepiece loaded after libc10, its static initializer overwrote c10's
  // flags and a failed allocation aborted the process (see CMakeLists.txt).
  CHECK_THROWS_AS(at::empty({int64_t{1} << 50}, at::kByte), c10::Error);
  CHECK(contains_all(error_message([] {
                       llmint8::untrusted::allocating("m.bin", "the model", [] { return at::empty({int64_t{1} << 50}, at::kByte); });
                     }),
                     {"'m.bin': cannot allocate the model"}));
}

TEST_CASE("FIFOs, directories and symlink loops are refused without blocking", "[untrusted]") {
  TempDir dir;
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  REQUIRE(::mkdir((dir / "folder").c_str(), 0700) == 0);
  REQUIRE(::symlink((dir / "loop").c_str(), (dir / "loop").c_str()) == 0);
  for (const auto& name : {"fifo", "folder", "loop"}) {
    const auto path = dir / name;
    std::string model, tokenizer;
    CHECK(returns_within(std::chrono::seconds(10), [&] {
      model = error_message([&] { m::load_llama2c(path); });
      tokenizer = error_message([&] { m::load_tokenizer(path); });
    }));
    const std::string why = name == std::string("fifo")     ? "must be a regular file, got a FIFO"
                            : name == std::string("folder") ? "must be a regular file, got a directory"
                                                            : "cannot open: Too many levels of symbolic links";
    CHECK(contains_all(model, {path, why}));
    CHECK(contains_all(tokenizer, {path, why}));
  }
  // The same as config.json, index or shard of a Hugging Face folder.
  TempDir hf;
  write_hf_folder(hf, kTinyConfig);
  REQUIRE(::remove((hf / "config.json").c_str()) == 0);
  REQUIRE(::mkdir((hf / "config.json").c_str(), 0700) == 0);
  CHECK(contains_all(error_message([&] { m::load_hf_model(hf.path); }),
                     {"config.json", "must be a regular file, got a directory"}));
  REQUIRE(::remove((hf / "config.json").c_str()) == 0);
  REQUIRE(::symlink((hf / "config.json").c_str(), (hf / "config.json").c_str()) == 0);
  CHECK(contains_all(error_message([&] { m::load_hf_model(hf.path); }),
                     {"config.json", "Too many levels of symbolic links"}));
  REQUIRE(::remove((hf / "config.json").c_str()) == 0);
  write(hf / "config.json", kTinyConfig);
  REQUIRE(::symlink((hf / "model.safetensors.index.json").c_str(), (hf / "model.safetensors.index.json").c_str()) == 0);
  CHECK(contains_all(error_message([&] { m::load_hf_model(hf.path); }),
                     {"model.safetensors.index.json", "Too many levels of symbolic links"}));
}

TEST_CASE("JSON of the wrong type or shape names the file and the field", "[untrusted]") {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases{
      {"tie_word_embeddings", "\"yes\"", "field 'tie_word_embeddings' must be true or false, got \"yes\""},
      {"rms_norm_eps", "[1]", "field 'rms_norm_eps' must be a number in [0, 1], got [1]"},
      {"rope_theta", "-1", "field 'rope_theta' must be a number in"},
      {"hidden_size", "8.5", "field 'hidden_size' must be an integer in [1, 65536], got 8.5"},
      {"model_type", "7", "field 'model_type' must be a string, got 7"},
      {"num_attention_heads", "3", "dim (8) must split into n_heads (3) heads"},
      {"quantization_config", "[]", "field 'quantization_config' must be a JSON object, got []"},
      {"quantization_config", R"({"load_in_8bit": 1})", "field 'quantization_config.load_in_8bit' must be true or false"},
      {"quantization_config", R"({"load_in_8bit": true, "llm_int8_skip_modules": ["a", 2]})",
       "field 'quantization_config.llm_int8_skip_modules' must be a list of strings"},
      {"quantization_config", R"({"load_in_8bit": true, "llm_int8_threshold": "6"})",
       "field 'quantization_config.llm_int8_threshold' must be a finite number >= 0 (0 disables outlier handling), "
       "got \"6\""},
      {"quantization_config", R"({"quant_method": "gptq"})",
       "field 'quantization_config.quant_method' must be \"bitsandbytes\" or \"llmint8\", got \"gptq\""},
  };
  for (const auto& c : cases) {
    const auto config = config_with(std::get<0>(c), std::get<1>(c));
    const auto message = error_message([&] { m::parse_hf_config(config, "c.json"); });
    INFO(message);
    CHECK(contains_all(message, {"'c.json': ", std::get<2>(c)}));
  }
  CHECK(contains_all(error_message([] { m::parse_hf_config("[1, 2]", "c.json"); }),
                     {"'c.json': the top level must be a JSON object, got [1,2]"}));
  CHECK(contains_all(error_message([] { m::parse_hf_config(std::string(100, '[') + std::string(100, ']'), "c.json"); }),
                     {"'c.json': JSON nesting must be at most 64 levels"}));
  CHECK(contains_all(error_message([] { m::parse_hf_config("{\"a\": tru}", "c.json"); }),
                     {"'c.json': is not valid JSON: parse error"}));
  // The shard index: every shard a plain file name in the folder.
  CHECK(contains_all(error_message([] { m::parse_shard_index(R"({"weight_map": {"w": "../x"}})", "i.json"); }),
                     {"'i.json': field 'weight_map.w' must be a file name in the folder, got \"../x\""}));
  CHECK(contains_all(error_message([] { m::parse_shard_index(R"({"weight_map": {"w": 3}})", "i.json"); }),
                     {"field 'weight_map.w' must be a file name in the folder, got 3"}));
  CHECK(contains_all(error_message([] { m::parse_shard_index(R"({"weight_map": []})", "i.json"); }),
                     {"field 'weight_map' must be a JSON object, got []"}));
  CHECK(m::parse_shard_index(R"({"weight_map": {"w": "a.safetensors"}})", "i.json").at("w") == "a.safetensors");
}

TEST_CASE("safetensors: shapes whose sizes wrap, bad dtypes and bool bytes name the tensor", "[untrusted]") {
  auto file = [](const std::string& header, const std::string& data) {
    std::string bytes;
    put(bytes, static_cast<uint64_t>(header.size()));
    return bytes + header + data;
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})",
       "tensor 't' size must be a size below 2^64 bytes"},
      {R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", "tensor 't' shape must be non-negative"},
      {R"({"t": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", "tensor 't' dtype must be one of"},
      {R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "u": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}})",
       "data offset must be 4 (no overlap, no hole), got 2"},
      {R"({"t": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}, "u": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
       "tensor 't' values must be 0 or 1 (dtype BOOL), got 7 at data offset 2"},
      {R"({"t": 5})", "field 't' must be a JSON object, got 5"},
  };
  const std::string data("\x00\x01\x07\x00\x00\x00\x80\x3f", 8);
  for (const auto& [header, expected] : cases) {
    const auto bytes = file(header, data);
    const auto message = error_message([&] { llmint8::read_safetensors(bytes.data(), bytes.size(), "s.safetensors"); });
    INFO(message);
    CHECK(contains_all(message, {"'s.safetensors': ", expected}));
  }
}

TEST_CASE("ops: K = 0 and N = 0 give empty or bias-only results, no reshape error", "[untrusted]") {
  const auto CB0 = at::zeros({3, 0}, at::kChar);
  const auto y = llmint8::int8_linear(at::zeros({2, 0}), CB0, at::ones({3}), at::full({3}, 0.5), 6.0);
  CHECK(y.sizes() == at::IntArrayRef({2, 3}));
  CHECK(at::equal(y, at::full({2, 3}, 0.5)));
  CHECK(llmint8::int8_linear_matmul(at::zeros({2, 4}, at::kChar), at::zeros({0, 4}, at::kChar)).sizes() ==
        at::IntArrayRef({2, 0}));
  CHECK(std::get<0>(llmint8::int8_vectorwise_quant(at::zeros({2, 0}), 6.0)).sizes() == at::IntArrayRef({2, 0}));
}

TEST_CASE("non-finite weights are rejected at load for every tensor, named", "[untrusted]") {
  TempDir dir;
  const auto clean = llama2c_file(kTinyHeader);
  const int64_t n_floats = static_cast<int64_t>(clean.size() - 28) / 4;
  // The first float (token embedding), one in the middle (a layer) and the last before the
  // rotary tables (the final norm).
  const int64_t rms_final = 12 * 8 + (2 * 8 + 2 * 64 + 2 * 64 + 3 * 128);
  for (const auto& [index, key] : std::vector<std::pair<int64_t, std::string>>{
           {0, "model.embed_tokens.weight"}, {12 * 8 + 8 + 64 + 3, "self_attn.k_proj.weight"},
           {rms_final, "model.norm.weight"}}) {
    REQUIRE(index < n_floats);
    write(dir / "nan.bin", llama2c_file(kTinyHeader, index, std::numeric_limits<float>::infinity()));
    CHECK(contains_all(error_message([&] { m::load_llama2c(dir / "nan.bin"); }),
                       {"nan.bin", key, "expected finite values, got 1 non-finite value (first: inf at ["}));
  }
  // lm_head of an untied checkpoint (its classifier follows the rotary tables).
  auto untied = kTinyHeader;
  untied[5] = -12;
  const auto untied_clean = llama2c_file(untied);
  write(dir / "head.bin", llama2c_file(untied, static_cast<int64_t>(untied_clean.size() - 28) / 4 - 1));
  CHECK(contains_all(error_message([&] { m::load_llama2c(dir / "head.bin"); }),
                     {"head.bin", "lm_head.weight: expected finite values, got 1 non-finite value (first: nan at [11, 7])"}));
  // C++ modules: load_state_dict leaves the module as it was.
  llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(4, 3).has_fp16_weights(false));
  layer->to(torch::kCPU);
  const auto before = layer->weight.clone();
  auto sd = llmint8::state_dict(*layer);
  sd["SCB"] = at::full({3}, std::numeric_limits<float>::quiet_NaN());
  sd["weight"] = at::ones({3, 4}, at::kChar);
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*layer, sd); }),
                     {"left unchanged", "SCB: expected finite values, got 3 non-finite values (first: nan at [0])"}));
  sd = llmint8::state_dict(*layer);
  sd["bias"] = at::ones({3}, at::kInt);
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*layer, sd); }),
                     {"bias: expected a floating-point tensor, got Int"}));
  sd = llmint8::state_dict(*layer);
  sd["weight"] = at::full({3, 4}, -128, at::kChar);
  CHECK(contains_all(error_message([&] { llmint8::load_state_dict(*layer, sd); }), {"weight: expected int8 codes in [-127, 127]"}));
  CHECK(at::equal(layer->weight, before));
}

TEST_CASE("Linear8bitLt: a threshold that is not a finite number >= 0 is refused at construction", "[untrusted]") {
  for (const double t : {std::nan(""), std::numeric_limits<double>::infinity(), -1.0}) {
    CHECK(contains_all(error_message([&] { llmint8::Linear8bitLt(llmint8::Linear8bitLtOptions(4, 3).threshold(t)); }),
                       {"Linear8bitLt", "'threshold' must be a finite number >= 0"}));
  }
  CHECK(contains_all(error_message([] { llmint8::Linear8bitLt(-1, 3); }), {"'in_features'", "got -1"}));
}
