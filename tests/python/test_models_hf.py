"""Every model family the C++ registry reads (Llama, Qwen2, Mistral, Gemma), as Hugging Face folders that
transformers writes here with tiny random weights: llmint8-generate gives transformers' fp32 logits
and greedy ids, and the 8-bit folders that transformers saves through the llmint8 quantizer give
the quantized transformers model's logits. Each family's feature (rope_theta only in
rope_parameters, Llama 3 rope scaling, tied embeddings, q/k/v biases, sliding windows, a head_dim
of its own, Gemma's norms, embedding scale and GELU) is checked to change transformers' logits, so
that agreeing means implementing it."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import llmint8

from test_workflow import cli_json, ids, run

transformers = pytest.importorskip("transformers")

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=256, max_position_embeddings=64, initializer_range=0.1)
# family: (config class, its features, (class, features) of the same weights without them).
# Windows of 5 over 20+ tokens slide.
FAMILIES = {
    "llama-rope-theta-bias": (transformers.LlamaConfig, dict(rope_theta=1e5, attention_bias=True, mlp_bias=True),
                              (transformers.LlamaConfig, dict(attention_bias=True, mlp_bias=True))),
    "llama-llama3-rope-tied": (transformers.LlamaConfig,
                               dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 4.0,
                                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 8},
                                    tie_word_embeddings=True),
                               (transformers.LlamaConfig, dict(rope_theta=5e5, tie_word_embeddings=True))),
    "llama-linear-rope": (transformers.LlamaConfig, dict(rope_parameters={"rope_type": "linear", "factor": 3.0}),
                          (transformers.LlamaConfig, {})),
    "qwen2-sliding": (transformers.Qwen2Config, dict(use_sliding_window=True, sliding_window=5, max_window_layers=1),
                      (transformers.Qwen2Config, {})),
    "mistral-sliding-head-dim": (transformers.MistralConfig, dict(sliding_window=5, head_dim=8),
                                 (transformers.MistralConfig, dict(sliding_window=None, head_dim=8))),
    "gemma": (transformers.GemmaConfig, dict(head_dim=8),  # tied, GELU (tanh), 1 + weight norms, scaled embeddings
              (transformers.LlamaConfig, dict(head_dim=8, tie_word_embeddings=True))),
}
TOKENS = [1, 17, 200, 3, 250, 99, 7, 31, 42, 5, 128, 64, 11, 12, 13, 14, 90, 91, 92, 93]
OUTLIER_FEATURES = [3, 40]  # norm weights of 30 there: activations past threshold 6


def _model(config_class, features, seed=0):
    torch.manual_seed(seed)
    config = config_class(**COMMON, **features)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    with torch.no_grad():  # transformers starts biases at 0 and norms at 1: make them count
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
            elif "norm" in name:
                param.normal_(1, 0.1)
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight[OUTLIER_FEATURES] = 30.0
    return model


def _logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].double()


def _cpp_logits(folder, tmp_path, *flags):
    out = cli_json("-m", folder, "--tokens", ids(TOKENS), "--score", "--logits-out", tmp_path / "logits.safetensors",
                   *flags)
    return out, load_file(str(tmp_path / "logits.safetensors"))["logits"].double()


def _fp32_rounding(reference):
    """What fp32 rounding through a few layers can move a logit: a few dozen ulps of the largest."""
    return 64 * torch.finfo(torch.float32).eps * reference.abs().max().item()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, float model, folder written by transformers in fp32)."""
    config_class, features, _ = FAMILIES[request.param]
    model = _model(config_class, features)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder


def test_family_features_change_transformers_logits(family):
    name, model, folder = family
    without = _model(*FAMILIES[name][2])
    without.load_state_dict(model.state_dict())
    assert (_logits(without) - _logits(model)).abs().max() > 1e-2, "the test would not see the feature"
    config = json.loads((folder / "config.json").read_text())
    if name == "llama-rope-theta-bias":  # transformers 5 writes rope_theta only inside rope_parameters
        assert "rope_theta" not in config and config["rope_parameters"]["rope_theta"] == 1e5


def test_float_folder_gives_transformers_logits_and_greedy_ids(family, tmp_path):
    name, model, folder = family
    out, logits = _cpp_logits(folder, tmp_path, "--no-int8")
    expected = _logits(model)
    assert (logits - expected).abs().max().item() < 1e-4
    # Weight bytes count every tensor once: a tied embedding is one tensor.
    assert out["weight_bytes_before"] == 4 * sum(p.numel() for p in model.parameters())
    prompt, steps = TOKENS[:4], 24
    with torch.no_grad():
        greedy = model.generate(torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, len(prompt):].tolist()
    cpp = cli_json("-m", folder, "--tokens", ids(prompt), "-n", steps, "-t", 0, "--no-int8")["generated_tokens"]
    stop = greedy.index(2) + 1 if 2 in greedy else steps  # the CLI stops after EOS (2) without a tokenizer
    assert cpp == greedy[:stop]


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_8bit_folder_gives_the_quantized_transformers_logits(family, threshold, tmp_path):
    name, model, folder = family
    quantized = transformers.AutoModelForCausalLM.from_pretrained(
        folder, device_map="cpu", attn_implementation="eager",
        quantization_config=llmint8.Int8Config(llm_int8_threshold=threshold))
    expected = _logits(quantized)
    quantized.save_pretrained(tmp_path / "int8")
    out, logits = _cpp_logits(tmp_path / "int8", tmp_path, "--no-int8")  # the checkpoint says 8-bit
    assert out["layers_quantized"] == 7 * COMMON["num_hidden_layers"]
    assert (logits - expected).abs().max().item() <= _fp32_rounding(expected)
    # The C++ quantizer makes the same codes from the float folder.
    _, here = _cpp_logits(folder, tmp_path, "--int8", "--threshold", threshold)
    assert (here - logits).abs().max().item() <= _fp32_rounding(expected)
    if threshold == 6.0:  # the planted features are outliers: threshold 6 computes them in float
        _, pure = _cpp_logits(folder, tmp_path, "--int8", "--threshold", 0)
        assert (pure - logits).abs().max().item() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_folders_load(dtype, tmp_path):
    model = _model(*FAMILIES["qwen2-sliding"][:2]).to(dtype)
    model.save_pretrained(tmp_path / "half")
    as_float = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "half", dtype=torch.float32,
                                                                 attn_implementation="eager").eval()
    _, logits = _cpp_logits(tmp_path / "half", tmp_path, "--no-int8")
    assert (logits - _logits(as_float)).abs().max().item() < 1e-4


def test_older_config_format_rope_theta_and_rope_scaling(tmp_path):
    """Configs written before transformers 5: rope_theta at the top level, scaling under rope_scaling."""
    model = _model(transformers.LlamaConfig, dict(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                   "rope_theta": 3e4}))
    model.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    config.pop("rope_parameters")
    config.update(rope_theta=3e4, rope_scaling={"type": "linear", "factor": 2.0})
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "old", attn_implementation="eager").eval()
    assert reloaded.config.rope_parameters["rope_theta"] == 3e4
    _, logits = _cpp_logits(tmp_path / "old", tmp_path, "--no-int8")
    assert (logits - _logits(model)).abs().max().item() < 1e-4
    assert (logits - _logits(reloaded)).abs().max().item() < 1e-4


def test_tied_checkpoint_holding_lm_head(tmp_path):
    """A tied model is one tensor: a checkpoint's lm_head.weight must be the embedding's values."""
    model = _model(*FAMILIES["llama-llama3-rope-tied"][:2])
    model.save_pretrained(tmp_path / "tied")
    tensors = load_file(str(tmp_path / "tied" / "model.safetensors"))
    assert "lm_head.weight" not in tensors
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, str(tmp_path / "tied" / "model.safetensors"))
    _, logits = _cpp_logits(tmp_path / "tied", tmp_path, "--no-int8")
    assert (logits - _logits(model)).abs().max().item() < 1e-4
    tensors["lm_head.weight"][0, 0] += 1
    save_file(tensors, str(tmp_path / "tied" / "model.safetensors"))
    result = run("-m", tmp_path / "tied", "--tokens", "1", "-n", 1)
    assert result.returncode == 1
    assert ("tensor 'lm_head.weight' must be absent or equal to 'model.embed_tokens.weight' (config.json ties them: "
            "tie_word_embeddings), got other values") in result.stderr


@pytest.mark.parametrize("case,edit,expect", [
    ("model_type", {"model_type": "gpt2"}, "field 'model_type' must be one of \"gemma\", \"llama\", \"mistral\", "
     "\"qwen2\" (the model types llmint8 reads), got \"gpt2\""),
    ("rope_type", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     "field 'rope_parameters.rope_type' must be \"default\", \"linear\" or \"llama3\""),
    ("rope_key", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "factor": 2.0}},
     "field 'rope_parameters.factor' must be absent for rope type \"default\""),
    ("partial_rotary", {"partial_rotary_factor": 0.5}, "field 'partial_rotary_factor' must be 1"),
    ("hidden_act", {"hidden_act": "relu"}, "field 'hidden_act' must be \"silu\", \"gelu\" or \"gelu_pytorch_tanh\""),
])
def test_config_json_that_is_not_understood_is_refused(case, edit, expect, tmp_path):
    model = _model(transformers.LlamaConfig, {})
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config.update(edit)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    result = run("-m", tmp_path / "m", "--tokens", "1", "-n", 1)
    assert result.returncode == 1
    assert expect in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
