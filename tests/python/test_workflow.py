"""The C++ workflow end to end through llmint8-generate: load a llama2.c checkpoint, swap in
Linear8bitLt, tokenize, generate. Checked against the float64 reference in llama2c_reference.py."""

import json
import os
import shutil
import struct
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmint8._cli import native_env, tool_path

from conftest import DEVICES
from llama2c_reference import Llama2cReference

ROOT = Path(__file__).resolve().parents[2]
# ../shared/models beside the repository; on the GPU machine a carried copy in .models/.
MODELS_DIR = next((p for p in (Path(os.environ.get("LLMINT8_MODELS", "/nonexistent")), ROOT.parent / "shared" / "models",
                               ROOT / ".models") if p.is_dir()), None)
if MODELS_DIR is None:
    if os.environ.get("LLMINT8_REQUIRE_MODELS") == "1":
        raise RuntimeError("the shared llama2.c models are not here (../shared/models, .models or $LLMINT8_MODELS)")
    pytest.skip("the shared llama2.c models are not here (../shared/models or .models)", allow_module_level=True)

MODELS = {
    "aidreams260K": (MODELS_DIR / "aidreams260K" / "aidreams260K.bin", MODELS_DIR / "aidreams260K" / "tok512.bin"),
    "stories260K": (MODELS_DIR / "stories260K" / "stories260K.bin", None),
}
CLI = tool_path("llmint8-generate")
_references = {}


def reference(name):
    if name not in _references:
        _references[name] = Llama2cReference(str(MODELS[name][0]))
    return _references[name]


def run(*args):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, errors="replace", timeout=300,
                          env=native_env())


def cli_json(*args):
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ids(tokens):
    return ",".join(map(str, tokens))


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_float64_reference(name, tmp_path):
    tokens = [1, 5, 100, 37, 300, 12, 77, 9, 450, 3, 211]
    out = cli_json("-m", MODELS[name][0], "--tokens", ids(tokens), "--no-int8", "--score", "--logits-out",
                   tmp_path / "logits.safetensors")
    logits = load_file(str(tmp_path / "logits.safetensors"))["logits"]
    expected = reference(name).logits(tokens)
    assert logits.shape == expected.shape
    err = ((logits.double() - expected).norm() / expected.norm()).item()
    assert err < 1e-4, err
    logp = torch.log_softmax(expected, -1)
    nll = -sum(logp[i - 1, tokens[i]].item() for i in range(1, len(tokens))) / (len(tokens) - 1)
    assert abs(out["mean_nll"] - nll) < 1e-4 * nll


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_greedy_ids_agree_with_reference_for_32_steps(name, device):
    out = cli_json("-m", MODELS[name][0], "--tokens", "1", "-n", 32, "-t", 0, "--no-int8", "--device", device)
    generated = out["generated_tokens"]
    assert len(generated) == 32 or out["stopped_at_eos"]
    assert generated == reference(name).greedy([1], len(generated))


# The 2% bound is aidreams260K's. On stories260K (64-wide layers) LLM.int8() itself raises the NLL
# of the float model's greedy continuation by 5.5% at threshold 0 and 6.8% at 6 (weights alone: 1.8%),
# in any correct implementation: the float64 reference test below shows that the C++ model computes
# exactly LLM.int8() there (the owner's decision, issue 15).
@pytest.mark.parametrize("name,threshold", [("aidreams260K", 0.0), ("aidreams260K", 6.0)])
def test_int8_nll_within_2_percent_of_float(name, threshold, record_property):
    model = MODELS[name][0]
    float_run = cli_json("-m", model, "--tokens", "1", "-n", 64, "-t", 0, "--no-int8")
    sequence = [1] + float_run["generated_tokens"]
    nll_float = cli_json("-m", model, "--tokens", ids(sequence), "--score", "--no-int8")["mean_nll"]
    nll_int8 = cli_json("-m", model, "--tokens", ids(sequence), "--score", "--int8", "--threshold", threshold)["mean_nll"]
    assert abs(nll_int8 - nll_float) <= 0.02 * nll_float, (nll_int8, nll_float)
    int8_run = cli_json("-m", model, "--tokens", "1", "-n", 64, "-t", 0, "--int8", "--threshold", threshold)
    matching = 0
    for a, b in zip(float_run["generated_tokens"], int8_run["generated_tokens"]):
        if a != b:
            break
        matching += 1
    record_property("greedy_prefix_matching_float", matching)
    print(f"{name} threshold {threshold}: NLL float {nll_float:.4f} int8 {nll_int8:.4f}; "
          f"greedy prefix matching float: {matching} of {len(float_run['generated_tokens'])}")
    assert int8_run["layers_quantized"] > 0 and int8_run["weight_bytes_after"] < float_run["weight_bytes_after"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_nll_equals_the_float64_llm_int8_reference(name, threshold):
    """The 8-bit C++ model scores a sequence as LLM.int8() computed in float64 does (both models have
    activation columns past 6, so threshold 6 takes the outlier path)."""
    model = MODELS[name][0]
    sequence = [1] + cli_json("-m", model, "--tokens", "1", "-n", 64, "-t", 0, "--no-int8")["generated_tokens"]
    nll_int8 = cli_json("-m", model, "--tokens", ids(sequence), "--score", "--int8", "--threshold", threshold)["mean_nll"]
    logits = Llama2cReference(str(model), int8=True, threshold=threshold).logits(sequence)[:-1].log_softmax(-1)
    expected = -logits[torch.arange(len(sequence) - 1), torch.tensor(sequence[1:])].mean().item()
    assert abs(nll_int8 - expected) <= 1e-3 * expected, (nll_int8, expected)


def test_every_flag_and_json_fields():
    model, tok = MODELS["aidreams260K"]
    out = cli_json("-m", model, "-z", tok, "-p", "Once upon a time", "-n", 12, "-t", 0.8, "--top-p", 0.95, "-s", 7,
                   "--device", "cpu", "--dtype", "bf16", "--int8", "--threshold", 6.0, "--skip", "mlp", "--no-cuda-graph")
    for key in ("prompt", "prompt_tokens", "generated_tokens", "text", "layers_quantized", "weight_bytes_before",
                "weight_bytes_after", "load_seconds", "time_to_first_token_s", "prompt_tokens_per_s",
                "decode_tokens_per_s", "cuda_graph", "cuda_graph_capture_s", "peak_memory_bytes"):
        assert key in out, key
    assert out["prompt"] == "Once upon a time" and out["prompt_tokens"][0] == 1
    assert out["layers_quantized"] == 4 * 4  # attention projections only: every mlp is skipped
    assert out["dtype"] == "bf16" and isinstance(out["text"], str) and len(out["generated_tokens"]) <= 12
    again = cli_json("-m", model, "-z", tok, "-p", "Once upon a time", "-n", 12, "-t", 0.8, "--top-p", 0.95, "-s", 7,
                     "--dtype", "bf16", "--skip", "mlp")
    assert again["generated_tokens"] == out["generated_tokens"]  # same seed, same tokens
    fp16 = cli_json("-m", model, "-z", tok, "-p", "Once", "-n", 8, "-t", 0, "--dtype", "fp16", "--no-int8")
    assert fp16["layers_quantized"] == 0
    text_run = run("-m", model, "-z", tok, "-p", "Once upon a time", "-n", 16, "-t", 0)
    assert text_run.returncode == 0 and text_run.stdout.startswith("Once upon a time")
    assert "layers quantized 28" in text_run.stdout and "tok/s" in text_run.stdout
    help_run = run("--help")
    assert help_run.returncode == 0 and "--threshold" in help_run.stdout and "--no-cuda-graph" in help_run.stdout
    assert "--profile" in help_run.stdout


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("int8", ["--no-int8", "--int8"])
def test_cuda_graph_decode_gives_the_eager_ids(device, int8):
    """On CUDA the decode replays a captured CUDA graph unless --no-cuda-graph, with the same greedy ids
    and the capture timed apart; on the CPU the flag is accepted and changes nothing."""
    args = ("-m", MODELS["stories260K"][0], "--tokens", "1,400,37", "-n", 40, "-t", 0, "--device", device, int8)
    graphed, eager = cli_json(*args), cli_json(*args, "--no-cuda-graph")
    assert len(eager["generated_tokens"]) == 40
    assert graphed["generated_tokens"] == eager["generated_tokens"]
    assert graphed["cuda_graph"] == (device == "cuda") and not eager["cuda_graph"]
    assert (graphed["cuda_graph_capture_s"] > 0) == (device == "cuda") and eager["cuda_graph_capture_s"] == 0
    assert graphed["decode_tokens_per_s"] > 0 and eager["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_profile_lists_where_the_generation_time_goes(device):
    """--profile adds the profiled events of the generation, grouped by name, most time first: on
    CUDA the kernels (the decode step's CUDA graph included), on the CPU the operators."""
    args = ("-m", MODELS["stories260K"][0], "--tokens", "1,400,37", "-n", 8, "-t", 0, "--device", device)
    plain, profiled = cli_json(*args), cli_json(*args, "--profile")
    assert profiled["generated_tokens"] == plain["generated_tokens"] and "profile" not in plain
    profile = profiled["profile"]
    totals = [row["total_us"] for row in profile["table"]]
    assert profile["generated_tokens"] == len(profiled["generated_tokens"]) == 8
    assert totals and totals == sorted(totals, reverse=True) and min(totals) >= 0
    assert all(row["calls"] >= 1 for row in profile["table"])
    assert sum(totals) == pytest.approx(profile["total_us"])
    assert profile["events"].startswith("CUDA kernels" if device == "cuda" else "CPU operators")
    assert any("llmint8" in row["name"] for row in profile["table"])  # the 8-bit layers' op or kernels
    text = run(*args, "--profile")
    assert text.returncode == 0 and "us a generated token" in text.stdout


def test_text_prompt_tokenizes_like_llama2c():
    model, tok = MODELS["aidreams260K"]
    out = cli_json("-m", model, "-z", tok, "-p", "Once upon a time", "-n", 1, "-t", 0)
    # llama2.c: BOS, then the greedy score merges of " Once upon a time".
    tokens = out["prompt_tokens"]
    assert tokens[0] == 1 and 1 < len(tokens) < len(" Once upon a time") + 1


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", ["missing", "truncated", "bad_header", "vocab_mismatch", "long_prompt",
                                  "unknown_flag", "bad_number", "negative_threshold", "empty_tokenizer"])
def test_bad_input_gives_one_clear_message(case, tmp_path):
    model, tok = MODELS["aidreams260K"]
    raw = model.read_bytes()
    if case == "missing":
        args, expect = ["-m", tmp_path / "nope.bin"], "cannot open"
    elif case == "truncated":
        args, expect = ["-m", _write(tmp_path / "t.bin", raw[: len(raw) // 2])], "(truncated)"
    elif case == "bad_header":
        args, expect = ["-m", _write(tmp_path / "h.bin", b"GGUF" + raw[4:])], "header field dim"
    elif case == "vocab_mismatch":  # a valid tokenizer file of 10 pieces for a 512-token model
        entries = b"".join(struct.pack("fi", 0.0, 1) + bytes([97 + i]) for i in range(10))
        args = ["-m", model, "-z", _write(tmp_path / "tok.bin", struct.pack("i", 1) + entries), "-p", "hi"]
        expect = "has 10 tokens, the model's vocabulary has 512"
    elif case == "long_prompt":
        args, expect = ["-m", model, "-z", tok, "-p", "the dream " * 200], "context holds 128"
    elif case == "unknown_flag":
        args, expect = ["-m", model, "--frobnicate"], "unknown flag '--frobnicate'"
    elif case == "bad_number":
        args, expect = ["-m", model, "-n", "many"], "flag -n needs a number"
    elif case == "negative_threshold":  # the ops' rule, in their words
        args, expect = ["-m", model, "--threshold", "-1"], "--threshold needs a finite number >= 0 (0 disables outlier"
    else:
        args, expect = ["-m", model, "-z", _write(tmp_path / "e.bin", struct.pack("i", 8)), "-p", "x"], "entries"
    result = run(*args)
    assert result.returncode in (1, 2), (result.returncode, result.stderr)  # an error exit, not a signal
    message = result.stderr.strip()
    assert message.startswith("llmint8-generate:") and expect in message, message
    assert len(message.splitlines()) == 1, message


def test_console_script_is_installed():
    script = Path(sysconfig.get_path("scripts")) / "llmint8-generate"
    found = shutil.which("llmint8-generate") or (str(script) if script.exists() else None)
    assert found, "pip did not install the llmint8-generate launcher"
    result = subprocess.run([found, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: llmint8-generate" in result.stdout
