"""llmint8-generate loads a Hugging Face folder straight into the asked-for form: on a folder of a
few hundred MB of fp16 weights, the resident set grows during the load by no more than 1.2x the
loaded weights (plus a small constant), as fp16 and as int8; nothing is staged in fp32, and the
mapped file's pages are let go as they are read. Each load runs in its own process."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from llmint8._cli import native_env, tool_path

# Below this, the constant: the tokens' tensors, one layer's fp32 copy while it is quantized,
# the finiteness check's mask of the largest tensor, allocator slack.
SLACK_BYTES = 96 << 20

SIZES = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
             num_key_value_heads=16, vocab_size=32000, max_position_embeddings=256)


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    """A Llama-shaped folder of random fp16 weights (about 330 MB), written with safetensors."""
    h, f, v = SIZES["hidden_size"], SIZES["intermediate_size"], SIZES["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(SIZES["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                   p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                   p + "mlp.down_proj.weight": (h, f)}
        shapes |= {p + f"self_attn.{n}_proj.weight": (h, h) for n in "qkvo"}
    generator = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(s, generator=generator) * 0.02).half() for k, s in shapes.items()}
    folder = tmp_path_factory.mktemp("fp16_llama")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float16", **SIZES}))
    return folder, sum(t.numel() for t in tensors.values())


@pytest.mark.parametrize("flags", [["--no-int8"], ["--int8"]], ids=["fp16", "int8"])
def test_load_peak_memory_is_the_final_weights(fp16_folder, flags):
    folder, numel = fp16_folder
    cmd = [tool_path("llmint8-generate"), "-m", str(folder), "--tokens", "1,2,3", "-n", "2", "-t", "0",
           "--dtype", "fp16", "--json", *flags]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=native_env())
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    weights = out["weight_bytes_after"]
    if flags == ["--no-int8"]:
        assert weights == 2 * numel and out["layers_quantized"] == 0
    else:  # 7 Linear layers a block as int8 codes and fp32 scales; embeddings, norms, lm_head fp16
        assert out["layers_quantized"] == 7 * SIZES["num_hidden_layers"] and weights < 2 * numel * 0.7
    assert out["weight_bytes_before"] == 2 * numel  # the same model unquantized, in fp16
    growth = out["load_peak_host_rss_bytes"] - out["host_rss_before_load_bytes"]
    print(f"{flags[0]}: load {out['load_seconds']:.2f} s, {out['load_gb_per_s']:.2f} GB/s, "
          f"RSS growth {growth / 2**20:.0f} MiB for {weights / 2**20:.0f} MiB of weights, "
          f"first-call setup {out['first_call_setup_s']:.3f} s, first token {out['time_to_first_token_s']:.3f} s")
    assert growth <= 1.2 * weights + SLACK_BYTES, (growth, weights)
    assert out["load_gb_per_s"] > 0 and out["first_call_setup_s"] > 0
