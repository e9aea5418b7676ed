"""Untrusted files and bad input (issue 13), through llmint8-generate and the Python readers: every
bad file fails with one message naming the file and the field; nothing crashes, hangs or aborts;
a failed load leaves the module as it was. The models here are tiny ones written by the tests."""

import json
import math
import os
import struct
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import llmint8
from llmint8 import reference as ref
from llmint8._cli import native_env, tool_path
from llmint8.llama2c import Llama2cTokenizer, convert_llama2c, read_llama2c
from llmint8.nn import Linear8bitLt

from conftest import DEVICES

CLI = tool_path("llmint8-generate")
TIMEOUT = 60  # a hang shows as TimeoutExpired, far below it a load takes a second


def run(*args):
    argv = [a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args]  # bytes: not valid UTF-8 on purpose
    return subprocess.run([CLI, *argv], capture_output=True, timeout=TIMEOUT, env=native_env())


def error_of(*args):
    """The one-line message of a failing run (exit 1 or 2, never a signal)."""
    result = run(*args)
    message = result.stderr.decode("utf-8", errors="replace").strip()
    assert result.returncode in (1, 2), (result.returncode, message)
    assert message.startswith("llmint8-generate:") and len(message.splitlines()) == 1, message
    return message


# --- tiny models written here


def llama2c_tensors(dim=8, hidden=8, layers=1, heads=2, kv_heads=2, vocab=12, seq=16, shared=True):
    """The float tensors of a llama2.c checkpoint, in file order, small and finite."""
    kv = kv_heads * dim // heads
    shapes = [("token_embedding", (vocab, dim)), ("rms_att", (layers, dim)), ("wq", (layers, dim, dim)),
              ("wk", (layers, kv, dim)), ("wv", (layers, kv, dim)), ("wo", (layers, dim, dim)),
              ("rms_ffn", (layers, dim)), ("w1", (layers, hidden, dim)), ("w2", (layers, dim, hidden)),
              ("w3", (layers, hidden, dim)), ("rms_final", (dim,)), ("freq_cis_real", (seq, dim // heads // 2)),
              ("freq_cis_imag", (seq, dim // heads // 2))] + ([] if shared else [("wcls", (vocab, dim))])
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal(shape) * 0.1).astype("<f4") for name, shape in shapes}


def write_llama2c(path, tensors, header=None):
    if header is None:
        layers, dim = tensors["rms_att"].shape
        vocab = tensors["token_embedding"].shape[0]
        header = (dim, tensors["w1"].shape[1], layers, 2, tensors["wk"].shape[1] // (dim // 2),
                  vocab if "wcls" not in tensors else -vocab, tensors["freq_cis_real"].shape[0])
    path.write_bytes(struct.pack("<7i", *header) + b"".join(t.tobytes() for t in tensors.values()))
    return path


def write_tokenizer(path, pieces, max_len=16):
    path.write_bytes(struct.pack("<i", max_len) + b"".join(struct.pack("<fi", 0.0, len(p)) + p for p in pieces))
    return path


BYTE_PIECES = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)] + [b" "]


@pytest.fixture
def tiny(tmp_path):
    """A llama2.c model of 12 tokens, and a Hugging Face folder converted from it."""
    model = write_llama2c(tmp_path / "tiny.bin", llama2c_tensors())
    folder = convert_llama2c(str(model), str(tmp_path / "hf"))
    return model, folder


# --- defect 1: size arithmetic that wraps


def test_header_whose_sizes_wrap_64_bits_is_an_error_not_a_crash(tmp_path):
    header = (1048576, 1002587, 861359, 2048, 1, 2, 1)  # each field in range; the sizes wrap uint64
    path = tmp_path / "wrap.bin"
    path.write_bytes(struct.pack("<7i", *header).ljust(2076, b"\0"))
    assert "dim must be in [1, 65536], got 1048576" in error_of("-m", path, "--tokens", "1", "-n", 1)
    with pytest.raises(ValueError, match="header field dim must be in \\[1, 65536\\], got 1048576"):
        read_llama2c(str(path))
    header = (64, 172, 4, 4, 4, 512, 128)
    path.write_bytes(struct.pack("<7i", *header) + bytes(100))
    with pytest.raises(ValueError, match="its size must be 932124 bytes .*got 128 bytes \\(truncated\\)"):
        read_llama2c(str(path))


# --- defect 2: byte-fallback ids past the vocabulary


def test_tokenizer_without_byte_pieces_refuses_unknown_characters(tmp_path):
    path = write_tokenizer(tmp_path / "tok.bin", [b"<unk>", b"<s>", b"</s>", b" ", b"a", b"b"])
    model = write_llama2c(tmp_path / "m.bin", llama2c_tensors(vocab=6))
    message = error_of("-m", model, "-z", path, "-p", "ab\u00e9", "-n", 1)
    assert "tok.bin" in message and "character at byte 2 (lead byte 0xC3)" in message and "no byte pieces" in message
    tok = Llama2cTokenizer(str(path))
    assert tok.encode("ab") == [1, 3, 4, 5]
    with pytest.raises(ValueError, match="tok.bin.*character 'é' at byte 2.*no byte pieces"):
        tok.encode("ab\u00e9")
    with pytest.raises(IndexError, match="token id 6 is outside the vocabulary of 6"):
        tok.decode([6])
    with pytest.raises(IndexError, match="token id -1"):
        tok.decode([-1])


# --- defect 3: sizes that would allocate terabytes


@pytest.mark.parametrize("field", ["hidden_size", "intermediate_size"])
def test_huge_config_sizes_are_errors_not_aborts(field, tiny):
    _, folder = tiny
    config = json.loads((folder / "config.json").read_text())
    config[field] = 2**31
    (folder / "config.json").write_text(json.dumps(config))
    assert f"field '{field}' must be an integer in [1, " in error_of("-m", folder, "--tokens", "1", "-n", 1)


def test_sizes_beyond_the_checkpoint_are_refused_before_allocating(tiny):
    _, folder = tiny
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_size=65536, intermediate_size=262144, num_attention_heads=2, num_key_value_heads=2)
    (folder / "config.json").write_text(json.dumps(config))
    assert "the checkpoint's tensors must be at least the" in error_of("-m", folder, "--tokens", "1", "-n", 1)


# --- defect 4: hangs


def test_huge_layer_count_is_an_error_not_a_hang(tiny):
    _, folder = tiny
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 2**63 - 1
    (folder / "config.json").write_text(json.dumps(config))
    message = error_of("-m", folder, "--tokens", "1", "-n", 1)
    assert "field 'num_hidden_layers' must be an integer in [1, 1024], got 9223372036854775807" in message


def test_fifo_as_model_or_tokenizer_is_refused_without_blocking(tiny, tmp_path):
    model, _ = tiny
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "must be a regular file, got a FIFO" in error_of("-m", fifo, "--tokens", "1", "-n", 1)
    assert "must be a regular file, got a FIFO" in error_of("-m", model, "-z", fifo, "-p", "a", "-n", 1)
    for read in (read_llama2c, Llama2cTokenizer):
        with pytest.raises(ValueError, match="fifo': the path must be a regular file, got a FIFO"):
            read(str(fifo))


# --- defect 5: --json and text that is not valid UTF-8


def test_json_output_survives_invalid_utf8_in_prompt_and_text(tmp_path):
    # A model that always picks byte piece <0xC3>: a UTF-8 lead byte with nothing after it.
    tensors = llama2c_tensors(vocab=len(BYTE_PIECES), shared=False)
    for name, t in tensors.items():
        t[...] = 1.0 if name in ("token_embedding", "rms_att", "rms_ffn", "rms_final") else 0.0
    tensors["wcls"][3 + 0xC3] = 1.0
    model = write_llama2c(tmp_path / "m.bin", tensors)
    tok = write_tokenizer(tmp_path / "tok.bin", BYTE_PIECES)
    result = run("-m", model, "-z", tok, "-p", b"bad \xff byte", "-n", 3, "-t", 0, "--json", "--no-int8")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["generated_tokens"] == [3 + 0xC3] * 3
    assert out["prompt"] == "bad \ufffd byte" and out["text"] == "\ufffd" * 3


# --- defect 6: raw library messages


@pytest.mark.parametrize("field,value,expected", [
    ("tie_word_embeddings", "yes", "field 'tie_word_embeddings' must be true or false, got \"yes\""),
    ("rms_norm_eps", [1e-5], "field 'rms_norm_eps' must be a number in [0, 1], got [1e-05]"),
    ("num_attention_heads", 3.0, "field 'num_attention_heads' must be an integer in [1, 8], got 3.0"),
    ("quantization_config", {"load_in_8bit": "yes"},
     "field 'quantization_config.load_in_8bit' must be true or false, got \"yes\""),
    ("quantization_config", {"load_in_8bit": True, "llm_int8_threshold": -6},
     "field 'quantization_config.llm_int8_threshold' must be a finite number >= 0 (0 disables outlier handling), got -6"),
])
def test_wrong_json_types_name_the_file_and_field(field, value, expected, tiny):
    _, folder = tiny
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    message = error_of("-m", folder, "--tokens", "1", "-n", 1)
    assert f"'{folder / 'config.json'}': {expected}" in message and "json.exception" not in message


def test_directories_and_symlink_loops_name_the_path(tiny, tmp_path):
    model, folder = tiny
    loop = tmp_path / "loop.bin"
    os.symlink(loop, loop)
    assert f"'{loop}': cannot open: Too many levels of symbolic links" in error_of("-m", loop, "--tokens", "1")
    assert "Too many levels of symbolic links" in error_of("-m", model, "-z", loop, "-p", "a")
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    assert f"'{folder / 'config.json'}': the path must be a regular file, got a directory" in error_of(
        "-m", folder, "--tokens", "1")
    (folder / "config.json").rmdir()
    os.symlink(folder / "config.json", folder / "config.json")
    assert "config.json': cannot open: Too many levels" in error_of("-m", folder, "--tokens", "1")
    for bad in (loop, tmp_path):
        with pytest.raises(ValueError, match="cannot open|must be a regular file, got a directory"):
            read_llama2c(str(bad))


@pytest.mark.parametrize("K,N", [(0, 3), (4, 0), (0, 0)])
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_empty_K_or_N_gives_what_the_reference_gives(K, N, threshold, device):
    A = torch.randn(2, K, device=device) * 10
    CB = torch.zeros(N, K, dtype=torch.int8, device=device)
    SCB, bias = torch.ones(N, device=device), torch.full((N,), 0.5, device=device)
    out = torch.ops.llmint8.int8_linear(A, CB, SCB, bias, threshold)
    expected = ref.int8_linear(A.cpu(), CB.cpu(), SCB.cpu(), bias.cpu(), threshold)
    assert out.shape == (2, N) and torch.equal(out.cpu().double(), expected.double())
    codes, stats, _ = ref.int8_vectorwise_quant(A.cpu(), threshold)
    assert codes.shape == (2, K) and torch.equal(stats, torch.ops.llmint8.int8_vectorwise_quant(A, threshold)[1].cpu())
    product = ref.int8_linear_matmul(codes, CB.cpu())
    assert torch.equal(product, torch.ops.llmint8.int8_linear_matmul(codes.to(device), CB).cpu())


# --- defect 7: partial state in Python


def _quantized_layer(seed=0):
    torch.manual_seed(seed)
    return Linear8bitLt(16, 8, has_fp16_weights=False, threshold=6.0).to("cpu")


def _snapshot(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _unchanged(layer, before):
    after = layer.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("case", ["bias_shape", "bias_nan", "scb_inf", "codes_minus_128", "missing_bias",
                                  "unexpected_key", "format_nan", "float_weight_nan"])
def test_failed_load_leaves_the_layer_as_it_was(case):
    source, target = _quantized_layer(0), _quantized_layer(1)
    sd = source.state_dict()
    expected = {
        "bias_shape": "bias: expected shape \\[8\\], got \\[9\\]", "bias_nan": "bias: expected finite values, got 1",
        "scb_inf": "SCB: expected finite values, got 8 non-finite values \\(first: inf at \\[0\\]\\)",
        "codes_minus_128": "weight: expected int8 codes in \\[-127, 127\\]", "missing_bias": "Missing key.*bias",
        "unexpected_key": "Unexpected key.*extra", "format_nan": "weight_format: expected weight_format 0 \\(row\\), got nan",
        "float_weight_nan": "weight: expected finite values, got 1 non-finite value \\(first: nan at \\[2, 3\\]\\)",
    }[case]
    if case == "bias_shape":
        sd["bias"] = torch.zeros(9)
    elif case == "bias_nan":
        sd["bias"][4] = float("nan")
    elif case == "scb_inf":
        sd["SCB"] = torch.full((8,), float("inf"))
    elif case == "codes_minus_128":
        sd["weight"] = torch.full((8, 16), -128, dtype=torch.int8)
    elif case == "missing_bias":
        del sd["bias"]
    elif case == "unexpected_key":
        sd["extra"] = torch.zeros(1)
    elif case == "format_nan":
        sd["weight_format"] = torch.tensor(float("nan"))
    else:
        weight = torch.randn(8, 16)
        weight[2, 3] = float("nan")
        sd = {"weight": weight, "bias": torch.zeros(8)}
    before = _snapshot(target)
    with pytest.raises(RuntimeError, match=expected):
        target.load_state_dict(sd)
    assert _unchanged(target, before)
    if case == "missing_bias":  # not strict: the entries given are loaded
        target.load_state_dict(sd, strict=False)
        assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, before["bias"])


def test_failed_layer_inside_a_model_is_left_as_it_was():
    model = torch.nn.Sequential(_quantized_layer(1), torch.nn.ReLU(), _quantized_layer(2))
    sd = torch.nn.Sequential(_quantized_layer(3), torch.nn.ReLU(), _quantized_layer(4)).state_dict()
    sd["0.bias"] = torch.zeros(3)
    before = _snapshot(model[0])
    with pytest.raises(RuntimeError, match="0.bias: expected shape \\[8\\], got \\[3\\]"):
        model.load_state_dict(sd)
    assert _unchanged(model[0], before)


# --- defect 8: non-finite weights


@pytest.mark.parametrize("tensor,key", [("token_embedding", "model.embed_tokens.weight"),
                                        ("rms_final", "model.norm.weight"), ("w2", "mlp.down_proj.weight"),
                                        ("wcls", "lm_head.weight")])
def test_non_finite_weights_are_rejected_with_the_tensor_name(tensor, key, tmp_path):
    tensors = llama2c_tensors(shared=False)
    tensors[tensor].reshape(-1)[5] = np.inf
    model = write_llama2c(tmp_path / "m.bin", tensors)
    message = error_of("-m", model, "--tokens", "1", "-n", 4, "--no-int8")
    assert "m.bin" in message and key in message and "expected finite values, got 1 non-finite value (first: inf" in message
    with pytest.raises(ValueError, match=f"tensor '{tensor}' must be finite, got 1 non-finite value \\(first: inf"):
        read_llama2c(str(model))


def test_non_finite_weights_in_a_hugging_face_folder_are_named(tiny):
    _, folder = tiny
    from safetensors.torch import load_file
    sd = load_file(str(folder / "model.safetensors"))
    sd["model.layers.0.input_layernorm.weight"][1] = float("nan")
    save_file(sd, str(folder / "model.safetensors"))
    message = error_of("-m", folder, "--tokens", "1", "-n", 4)
    assert "model.layers.0.input_layernorm.weight: expected finite values, got 1 non-finite value (first: nan at [1])" in message


# --- defect 9: thresholds


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -1.0])
def test_threshold_must_be_a_finite_number(threshold):
    with pytest.raises(ValueError, match="'threshold' must be a finite number >= 0"):
        Linear8bitLt(4, 4, threshold=threshold)
    with pytest.raises(ValueError, match="llm_int8_threshold must be a finite number >= 0"):
        llmint8.Int8Config(llm_int8_threshold=threshold)
    with pytest.raises(ValueError, match="argument 'input_features' must be an integer >= 0, got -1"):
        Linear8bitLt(-1, 4)


def test_converter_checks_both_inputs_before_writing(tmp_path):
    model = write_llama2c(tmp_path / "m.bin", llama2c_tensors())
    tok = write_tokenizer(tmp_path / "tok.bin", BYTE_PIECES)
    with pytest.raises(ValueError, match="has 260 tokens, the model's vocabulary has 12"):
        convert_llama2c(str(model), str(tmp_path / "out"), str(tok))
    assert not (tmp_path / "out").exists()
    assert math.isfinite(read_llama2c(str(model))["tensors"]["wq"].sum().item())


def test_transformers_loading_rejects_non_finite_float_weights(tiny):
    """Embeddings, norms and lm_head load through transformers; the llmint8 quantizer checks them after.
    (Corrupt 8-bit layers: test_python_workflow.py::test_corrupt_8bit_checkpoint_fails_naming_the_key.)"""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file
    _, folder = tiny
    sd = load_file(str(folder / "model.safetensors"))
    sd["model.norm.weight"][0] = float("inf")
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.norm.weight: expected finite values, got 1 non-finite value"):
        transformers.AutoModelForCausalLM.from_pretrained(str(folder), device_map="cpu",
                                                          quantization_config=llmint8.Int8Config())
