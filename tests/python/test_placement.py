"""device_map and max_memory with the llmint8 quantizer: sizing at one byte per int8 weight, clear
errors when the budget cannot hold the model, CPU offload of float modules, and the split over
two GPUs (the GPU tests run on the GPU machines; the two-GPU ones need kind nvidia-h100-x2)."""

import pytest
import torch

import llmint8

from test_python_workflow import folders  # noqa: F401  (the converted llama2.c folders)
from test_workflow import MODELS, cli_json

transformers = pytest.importorskip("transformers")

GPUS = torch.cuda.device_count()
needs_gpu = pytest.mark.skipif(GPUS < 1, reason="needs a GPU")
needs_two_gpus = pytest.mark.skipif(GPUS < 2, reason="needs two GPUs (kind nvidia-h100-x2)")


def load(folder, threshold=6.0, offload=False, **kwargs):
    config = llmint8.Int8Config(load_in_8bit=True, llm_int8_threshold=threshold,
                                llm_int8_enable_fp32_cpu_offload=offload)
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), quantization_config=config, **kwargs)


def placement(model):
    """{module name: device} for every Linear and Linear8bitLt, from where its weight lives."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            out[name] = (type(module).__name__, module.weight.device, module.weight.dtype)
    return out


def greedy(model, steps=24):
    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    with torch.no_grad():
        return model.generate(torch.tensor([[1]], device=device), max_new_tokens=steps, do_sample=False)[0, 1:].tolist()


def test_max_memory_counts_one_byte_per_int8_weight(folders):
    folder = folders["aidreams260K"]
    fp32_bytes = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).get_memory_footprint()
    int8 = load(folder, device_map="cpu")
    int8_bytes = int8.get_memory_footprint()
    assert int8_bytes < 0.4 * fp32_bytes
    # A budget that holds the 8-bit model (with the quantizer's 10% headroom) but not the float one:
    # "auto" places everything, which it can only do when int8 weights are sized at one byte.
    budget = int(int8_bytes / 0.85)
    assert budget < fp32_bytes
    model = load(folder, device_map="auto", max_memory={"cpu": budget})
    assert all(device == torch.device("cpu") for _, device, _ in placement(model).values())
    assert model.model.layers[3].mlp.down_proj.weight.dtype == torch.int8
    assert greedy(model) == greedy(int8)


def test_max_memory_that_cannot_fit_names_what_is_left_over(folders):
    with pytest.raises(ValueError, match=r"max_memory cannot hold the 8-bit model where device_map asks: .* "
                                         r"would be offloaded to disk; raise max_memory"):
        load(folders["aidreams260K"], device_map="auto", max_memory={"cpu": 100_000})


def cpp_greedy(threshold, steps=24):
    ids = cli_json("-m", MODELS["aidreams260K"][0], "--tokens", "1", "-n", steps, "-t", 0, "--int8",
                   "--threshold", threshold, "--device", "cuda")["generated_tokens"]
    stop = next((i for i, t in enumerate(ids) if t in (1, 2)), None)
    return ids[:stop]


@needs_gpu
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_on_one_gpu_the_python_and_cpp_models_agree(threshold, folders):
    model = load(folders["aidreams260K"], threshold, device_map="auto")
    linear = placement(model)
    assert all(device.type == "cuda" for _, device, _ in linear.values())
    assert linear["model.layers.0.self_attn.q_proj"][::2] == ("Linear8bitLt", torch.int8)
    expected = cpp_greedy(threshold)
    assert greedy(model)[: len(expected)] == expected


@needs_gpu
def test_max_memory_on_the_gpu_that_cannot_fit_raises(folders):
    with pytest.raises(ValueError, match=r"would be offloaded to (cpu|disk)"):
        load(folders["aidreams260K"], device_map="auto", max_memory={0: 60_000, "cpu": 10**9})


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """A random fp16 Llama whose int8 decoder layers outweigh its float embeddings (unlike the shared
    260K models), so that budgets place whole layers: 6 layers of about 0.8 MB in int8."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=6,
                                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=128,
                                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    folder = tmp_path_factory.mktemp("wide_llama")
    transformers.LlamaForCausalLM(config).to(torch.float16).save_pretrained(str(folder))
    return folder


def smallest_budget(folder, make_budget, wanted, **kwargs):
    """The first of a rising series of budgets whose placement satisfies wanted(model): budgets are
    fractions of the whole 8-bit model's footprint (accelerate also reserves its largest layer)."""
    size = load(folder, device_map={"": 0}).get_memory_footprint()
    for fraction in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        model = load(folder, device_map="auto", max_memory=make_budget(int(fraction * size)), **kwargs)
        if wanted(model):
            return model
    raise AssertionError("no budget gave the placement asked for")


def int8_devices(model):
    return {device for kind, device, _ in placement(model).values() if kind == "Linear8bitLt"}


@needs_gpu
def test_tiny_gpu_budget_offloads_float_modules_to_the_cpu(wide_llama):
    model = smallest_budget(wide_llama, lambda b: {0: b, "cpu": 10**9},
                            lambda m: {str(d) for d in getattr(m, "hf_device_map", {}).values()} == {"0", "cpu"}
                            and int8_devices(m) == {torch.device("cuda", 0)}, offload=True)
    on_cpu = [n for n, d in model.hf_device_map.items() if str(d) == "cpu"]
    assert any(n.startswith("model.layers.") for n in on_cpu), model.hf_device_map
    for name, (kind, device, dtype) in placement(model).items():
        if any(name == p or name.startswith(p + ".") for p in on_cpu):
            assert (kind, dtype) == ("Linear", torch.float16), name  # offloaded modules stay float
        elif name != "lm_head":
            assert (kind, device.type, dtype) == ("Linear8bitLt", "cuda", torch.int8), name
    assert len(greedy(model)) > 0


@needs_gpu
def test_explicit_map_with_cpu_offload(folders):
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 0,
                  "model.layers.2": "cpu", "model.layers.3": "cpu", "model.norm": "cpu", "lm_head": 0}
    with pytest.raises(ValueError, match=r"model.layers.2, model.layers.3, model.norm would be offloaded to cpu"):
        load(folders["aidreams260K"], device_map=device_map)
    model = load(folders["aidreams260K"], offload=True, device_map=device_map)
    linear = placement(model)
    assert linear["model.layers.1.mlp.up_proj"][:2] == ("Linear8bitLt", torch.device("cuda", 0))
    assert linear["model.layers.2.mlp.up_proj"][0] == "Linear"
    assert len(greedy(model)) > 0


@needs_two_gpus
@pytest.mark.parametrize("device_map", ["balanced", "auto", "explicit"])
def test_split_over_two_gpus(device_map, wide_llama):
    single = greedy(load(wide_llama, device_map={"": 0}))
    both = {torch.device("cuda", 0), torch.device("cuda", 1)}
    if device_map == "explicit":
        explicit = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 1}
        explicit.update({f"model.layers.{i}": 0 if i < 3 else 1 for i in range(6)})
        model = load(wide_llama, device_map=explicit)
    elif device_map == "balanced":
        model = load(wide_llama, device_map="balanced", max_memory={0: 10**9, 1: 10**9})
    else:  # "auto" fills GPU 0 first: a small budget there spills layers onto GPU 1
        model = smallest_budget(wide_llama, lambda b: {0: b, 1: 10**9}, lambda m: int8_devices(m) == both)
    assert {str(d) for d in model.hf_device_map.values()} == {"0", "1"}, model.hf_device_map
    assert int8_devices(model) == both
    assert all(dtype == torch.int8 for kind, _, dtype in placement(model).values() if kind == "Linear8bitLt")
    assert greedy(model) == single
