// Builds a small random Llama, swaps in Linear8bitLt, saves and reloads it through safetensors,
// and checks that the reloaded 8-bit model generates what the original does.
#include <llmint8/llmint8.h>
#include <llmint8/models/generate.h>
#include <llmint8/models/llama.h>
#include <llmint8/models/safetensors.h>

#include <torch/torch.h>

#include <iostream>

namespace m = llmint8::models;

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "consumer_model.safetensors";
  m::LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 128;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 100;
  c.max_seq_len = 32;
  torch::manual_seed(0);
  auto make = [&] {
    auto model = m::LlamaForCausalLM(c);
    llmint8::replace_linear(*model, llmint8::Int8Config());
    model->bind();
    return model;
  };
  auto model = make();
  model->to(torch::kCPU);  // quantizes
  llmint8::save_safetensors(path, llmint8::state_dict(*model));
  auto reloaded = make();
  llmint8::load_state_dict(*reloaded, llmint8::load_safetensors(path));
  const auto a = m::generate(*model, {1, 2, 3}, 8, {/*temperature=*/0.0}, {});
  const auto b = m::generate(*reloaded, {1, 2, 3}, 8, {/*temperature=*/0.0}, {});
  std::cout << "llmint8 models: " << a.tokens.size() << " tokens, reloaded model agrees: "
            << (a.tokens == b.tokens ? "yes" : "no") << "\n";
  return a.tokens == b.tokens && a.tokens.size() == 8 ? 0 : 1;
}
