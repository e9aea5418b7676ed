// Cross-language checkpoint tool, driven by tests/python/test_cpp_parity.py:
//   checkpoint_tool run  LAYER.safetensors INPUT.safetensors OUT.safetensors THRESHOLD
//     loads a Linear8bitLt from LAYER (bitsandbytes layout), applies it to INPUT["x"]
//     and writes OUT["y"];
//   checkpoint_tool make LAYER.safetensors IN OUT THRESHOLD SEED
//     quantizes a fresh C++ layer and saves it.
#include <llmint8/llmint8.h>
#include <llmint8/models/safetensors.h>

#include <torch/torch.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "run" && argc == 6) {
      const auto tensors = llmint8::load_safetensors(argv[2]);
      const auto& w = tensors.at("weight");
      llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(w.size(1), w.size(0))
                                      .bias(tensors.count("bias") > 0)
                                      .has_fp16_weights(false)
                                      .threshold(std::stod(argv[5])));
      llmint8::load_state_dict(*layer, tensors);
      const auto x = llmint8::load_safetensors(argv[3]).at("x");
      llmint8::save_safetensors(argv[4], {{"y", layer->forward(x)}});
      return 0;
    }
    if (mode == "make" && argc == 7) {
      torch::manual_seed(std::stoll(argv[6]));
      llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(std::stoll(argv[3]), std::stoll(argv[4]))
                                      .has_fp16_weights(false)
                                      .threshold(std::stod(argv[5])));
      layer->to(torch::kCPU);
      llmint8::save_safetensors(argv[2], llmint8::state_dict(*layer));
      return 0;
    }
    std::cerr << "usage: checkpoint_tool run LAYER INPUT OUT THRESHOLD | make LAYER IN OUT THRESHOLD SEED\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "checkpoint_tool: " << e.what() << "\n";
    return 1;
  }
}
