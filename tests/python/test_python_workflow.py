"""The workflow from Python: llama2.c -> Hugging Face folder (python -m llmint8 convert-llama2c), the
llama2.c tokenizer in Python, transformers' LlamaForCausalLM swapped to Linear8bitLt, generating."""

import importlib.util
import io
import json
import logging
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import llmint8
from llmint8.llama2c import Llama2cTokenizer

from test_workflow import MODELS, cli_json, ids, reference

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name, (model, tok) in MODELS.items():
        folder = tmp_path_factory.mktemp(name)
        args = [sys.executable, "-m", "llmint8", "convert-llama2c", str(model), str(folder)]
        if tok is not None:
            args += ["--tokenizer", str(tok)]
        result = subprocess.run(args, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        out[name] = folder
    return out


def load(folder):
    return transformers.LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


@pytest.mark.parametrize("name", MODELS)
def test_converted_folder_in_transformers_matches_reference(name, folders):
    tokens = [1, 5, 100, 37, 300, 12, 77, 9, 450, 3, 211]
    with torch.no_grad():
        logits = load(folders[name])(torch.tensor([tokens])).logits[0].double()
    expected = reference(name).logits(tokens)
    assert ((logits - expected).norm() / expected.norm()).item() < 1e-4


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_8bit_transformers_model_and_cpp_model_agree(name, threshold, folders):
    model = load(folders[name])
    fp16_bytes = sum(p.numel() * 2 for p in model.parameters())
    names = llmint8.replace_linear_with_8bit(model, llm_int8_threshold=threshold)
    assert len(names) == 7 * model.config.num_hidden_layers and "lm_head" not in names
    model.to("cpu")
    assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.int8
    assert type(model.lm_head) is torch.nn.Linear
    with torch.no_grad():
        generated = model.generate(torch.tensor([[1]]), max_new_tokens=32, do_sample=False)[0, 1:].tolist()
    cpp = cli_json("-m", MODELS[name][0], "--tokens", "1", "-n", 32, "-t", 0, "--int8", "--threshold", threshold)
    stop = next((i for i, t in enumerate(cpp["generated_tokens"]) if t in (1, 2)), None)
    expected = cpp["generated_tokens"][:stop]
    assert generated[: len(expected)] == expected
    int8_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert int8_bytes < fp16_bytes  # the tiny model's float embeddings and lm_head keep it above half


def test_python_tokenizer_matches_cpp():
    model, tok = MODELS["aidreams260K"]
    tokenizer = Llama2cTokenizer(str(tok))
    for prompt in ("Once upon a time", "pixels unfold, a kaleidoscope!", "naïve café ☕"):
        expected = cli_json("-m", model, "-z", tok, "-p", prompt, "-n", 1, "-t", 0)["prompt_tokens"]
        assert tokenizer.encode(prompt) == expected
        assert tokenizer.decode(expected[1:]) == prompt


def test_convert_rejects_a_mismatched_tokenizer(tmp_path):
    model = MODELS["stories260K"][0]
    bad = tmp_path / "tok.bin"
    bad.write_bytes((1).to_bytes(4, "little") + b"".join(b"\0\0\0\0\1\0\0\0" + bytes([97 + i]) for i in range(5)))
    result = subprocess.run([sys.executable, "-m", "llmint8", "convert-llama2c", str(model), str(tmp_path / "o"),
                             "--tokenizer", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and "has 5 tokens, the model's vocabulary has 512" in result.stderr


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_from_pretrained_with_int8_config(name, threshold, folders, tmp_path):
    config = llmint8.Int8Config(load_in_8bit=True, llm_int8_threshold=threshold)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folders[name]), quantization_config=config,
                                                              device_map="cpu")
    down = model.model.layers[0].mlp.down_proj
    assert isinstance(down, llmint8.nn.Linear8bitLt) and down.weight.dtype == torch.int8
    assert down.weight.SCB.dtype == torch.float32 and down.state.threshold == threshold
    assert type(model.lm_head) is torch.nn.Linear and model.is_loaded_in_8bit
    with torch.no_grad():
        generated = model.generate(torch.tensor([[1]]), max_new_tokens=32, do_sample=False)[0, 1:].tolist()
    cpp = cli_json("-m", MODELS[name][0], "--tokens", "1", "-n", 32, "-t", 0, "--int8", "--threshold", threshold)
    stop = next((i for i, t in enumerate(cpp["generated_tokens"]) if t in (1, 2)), None)
    assert generated[: len(cpp["generated_tokens"][:stop])] == cpp["generated_tokens"][:stop]

    # save_pretrained writes bitsandbytes' tensors under a quantization_config naming llmint8 ...
    model.save_pretrained(str(tmp_path / "saved"))
    saved = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert saved["model.layers.0.mlp.down_proj.weight"].dtype == torch.int8
    assert saved["model.layers.0.mlp.down_proj.SCB"].dtype == torch.float32
    assert saved["model.layers.0.mlp.down_proj.weight_format"].dtype == torch.uint8
    saved_config = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert saved_config["quant_method"] == "llmint8" and saved_config["llm_int8_threshold"] == threshold
    # ... which from_pretrained reloads without quantizing again, and the C++ CLI runs.
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved"), device_map="cpu")
    assert torch.equal(reloaded.model.layers[0].mlp.down_proj.weight, down.weight)
    x = torch.tensor([[1, 5, 100, 37, 300]])
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, model(x).logits)
    from_cpp = cli_json("-m", tmp_path / "saved", "--tokens", "1", "-n", 32, "-t", 0)
    assert from_cpp["layers_quantized"] == 7 * model.config.num_hidden_layers
    assert from_cpp["generated_tokens"][: len(cpp["generated_tokens"])] == cpp["generated_tokens"]


def test_memory_footprint_about_half_of_fp16(folders):
    fp16 = transformers.AutoModelForCausalLM.from_pretrained(str(folders["aidreams260K"]), dtype=torch.float16)
    int8 = transformers.AutoModelForCausalLM.from_pretrained(
        str(folders["aidreams260K"]), dtype=torch.float16, device_map="cpu",
        quantization_config=llmint8.Int8Config(llm_int8_threshold=6.0))
    linear = [n for n, m in fp16.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    linear_fp16 = sum(fp16.get_submodule(n).weight.numel() * 2 for n in linear)
    linear_int8 = sum(int8.get_submodule(n).weight.numel() * int8.get_submodule(n).weight.element_size() for n in linear)
    assert linear_int8 * 2 == linear_fp16  # the swapped layers: exactly half
    assert int8.get_memory_footprint() < fp16.get_memory_footprint()


def test_bitsandbytes_checkpoint_loads_through_llmint8(folders, tmp_path):
    """A folder as bitsandbytes saves it (quant_method "bitsandbytes", load_in_8bit) loads unchanged."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed: transformers loads such folders with it")
    ours = transformers.AutoModelForCausalLM.from_pretrained(
        str(folders["aidreams260K"]), device_map="cpu", quantization_config=llmint8.Int8Config(llm_int8_threshold=6.0))
    ours.save_pretrained(str(tmp_path / "bnb"))
    config = json.loads((tmp_path / "bnb" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
                                     "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None,
                                     "llm_int8_has_fp16_weight": False, "llm_int8_enable_fp32_cpu_offload": False}
    (tmp_path / "bnb" / "config.json").write_text(json.dumps(config))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bnb"), device_map="cpu")
    assert isinstance(loaded.model.layers[1].self_attn.o_proj, llmint8.nn.Linear8bitLt)
    x = torch.tensor([[1, 5, 100, 37]])
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ours(x).logits)


@pytest.mark.parametrize("key,bad,reason", [  # the words of Linear8bitLt.load_state_dict and C++ (one table)
    ("weight_format", lambda t: torch.tensor(1, dtype=torch.uint8),
     r"up_proj.weight_format: weight_format 1 \(col32\) is a legacy tiled layout; only 0 \(row\) is supported"),
    ("SCB", lambda t: t[:5], r"up_proj.SCB: expected shape \[172\], got \[5\]"),
    ("weight", lambda t: t.float(), r"up_proj.SCB given with a float model.layers.0.mlp.up_proj.weight"),
    ("weight", lambda t: t[:, :60].contiguous(), r"up_proj.weight: expected shape \[172, 64\], got \[172, 60\]"),
    ("SCB", lambda t: t.index_fill(0, torch.tensor([3]), float("inf")),
     r"up_proj.SCB: expected finite values, got 1 non-finite value \(first: inf at \[3\]\)"),
    ("weight", lambda t: t.index_fill(0, torch.tensor([0]), -128), r"up_proj.weight: expected int8 codes in \[-127, 127\]"),
    ("weight_format", lambda t: torch.tensor(float("nan")), r"up_proj.weight_format: expected weight_format 0 \(row\), got nan"),
])
def test_corrupt_8bit_checkpoint_fails_naming_the_key(key, bad, reason, folders, tmp_path):
    """transformers logs each conversion error in its load report, then raises; the report names our reason."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folders["aidreams260K"]), device_map="cpu", quantization_config=llmint8.Int8Config(llm_int8_threshold=6.0))
    model.save_pretrained(str(tmp_path / "int8"))
    sd = load_file(str(tmp_path / "int8" / "model.safetensors"))
    name = f"model.layers.0.mlp.up_proj.{key}"
    sd[name] = bad(sd[name])
    save_file(sd, str(tmp_path / "int8" / "model.safetensors"), metadata={"format": "pt"})
    report = io.StringIO()
    handler = logging.StreamHandler(report)
    transformers.utils.logging.add_handler(handler)
    try:
        with pytest.raises(RuntimeError, match="issues during automatic conversion"):
            transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "int8"), device_map="cpu")
    finally:
        transformers.utils.logging.remove_handler(handler)
    assert re.search(reason, report.getvalue()), report.getvalue()[-2000:]


def _py_generate(*args):
    return subprocess.run([sys.executable, "-m", "llmint8", "generate", *map(str, args)], capture_output=True,
                          text=True, errors="replace", timeout=300)


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_python_generate_cli_matches_cpp(threshold):
    model, tok = MODELS["aidreams260K"]
    result = _py_generate("-m", model, "-z", tok, "-p", "Once upon a time", "-n", 24, "-t", 0, "--int8",
                          "--threshold", threshold, "--json")
    assert result.returncode == 0, result.stderr
    py = json.loads(result.stdout.strip().splitlines()[-1])
    cpp = cli_json("-m", model, "-z", tok, "-p", "Once upon a time", "-n", 24, "-t", 0, "--int8",
                   "--threshold", threshold)
    assert py["prompt_tokens"] == cpp["prompt_tokens"]
    assert py["generated_tokens"] == cpp["generated_tokens"] and py["text"] == cpp["text"]
    assert py["layers_quantized"] == cpp["layers_quantized"] == 28
    for key in ("weight_bytes_before", "weight_bytes_after", "load_seconds", "time_to_first_token_s",
                "prompt_tokens_per_s", "decode_tokens_per_s", "peak_memory_bytes"):
        assert key in py, key
    assert py["weight_bytes_after"] < py["weight_bytes_before"]


def test_python_generate_flags_and_bad_input(folders, tmp_path):
    model, tok = MODELS["aidreams260K"]
    sampled = _py_generate("-m", folders["aidreams260K"], "-p", "Once", "-n", 8, "-t", 0.8, "--top-p", 0.9, "-s", 3,
                           "--device", "cpu", "--dtype", "bf16", "--skip", "mlp", "--json")
    assert sampled.returncode == 0, sampled.stderr
    out = json.loads(sampled.stdout.strip().splitlines()[-1])
    assert out["layers_quantized"] == 16 and out["dtype"] == "bf16" and len(out["generated_tokens"]) <= 8
    text = _py_generate("-m", model, "-z", tok, "-p", "Once", "-n", 8, "-t", 0, "--no-int8")
    assert text.returncode == 0 and "layers quantized 0" in text.stdout
    assert "Loading weights" not in text.stderr  # no progress bars when stderr is not a terminal
    for args, expect in ((["-m", tmp_path / "missing.bin"], "no such model file or folder"),
                         (["-m", model, "-z", tok, "-p", "dream " * 200], "context holds 128"),
                         (["-m", model, "--frobnicate"], "unrecognized arguments: --frobnicate")):
        bad = _py_generate(*args)
        assert bad.returncode in (1, 2) and expect in bad.stderr, bad.stderr[-500:]


def test_gpt2_conv1d_layers_are_swapped_and_round_trip(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=120, n_positions=64,
                                     bos_token_id=0, eos_token_id=1)
    float_model = transformers.GPT2LMHeadModel(config).eval()
    float_model.save_pretrained(str(tmp_path / "gpt2"))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "gpt2"), device_map="cpu", quantization_config=llmint8.Int8Config(llm_int8_threshold=6.0))
    c_attn = model.transformer.h[0].attn.c_attn  # a Conv1D (weight [64, 192]) in GPT-2
    assert isinstance(c_attn, llmint8.nn.Linear8bitLt) and c_attn.weight.shape == (192, 64)
    assert c_attn.weight.dtype == torch.int8 and type(model.lm_head) is torch.nn.Linear
    x = torch.randint(2, 120, (1, 16))
    with torch.no_grad():
        expected, got = float_model(x).logits, model(x).logits
    assert ((got - expected).norm() / expected.norm()).item() < 0.03
    model.save_pretrained(str(tmp_path / "gpt2-int8"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "gpt2-int8"), device_map="cpu")
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, got)
        assert model.generate(x, max_new_tokens=4, do_sample=False).shape == (1, 20)


def test_quantization_progress_bar_on_a_terminal_only():
    """python -m llmint8 generate shows a "Quantizing to int8" bar when stderr is a terminal."""
    import os
    import pty
    model = MODELS["aidreams260K"][0]
    args = [sys.executable, "-m", "llmint8", "generate", "-m", str(model), "-n", "2", "-t", "0", "--int8"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal, 120 columns wide
        import fcntl
        import struct
        import termios
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        os.execvp(args[0], args)
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen[-500:]
    assert b"Quantizing to int8" in seen and b"/28 [" in seen and b"Loading weights" in seen
    piped = _py_generate("-m", model, "-n", 2, "-t", 0, "--int8")
    assert piped.returncode == 0 and "Quantizing to int8" not in piped.stderr
