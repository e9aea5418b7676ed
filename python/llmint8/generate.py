"""python -m llmint8 generate: the Python workflow with the C++ CLI's flags. Loads a Hugging Face
Llama folder (or a llama2.c .bin, converted on the fly) with transformers, in 8 bits through the
"llmint8" quantizer, and generates token by token with a KV cache."""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from .config import Int8Config
from .llama2c import BOS, EOS, Llama2cTokenizer, convert_llama2c
from .nn import Linear8bitLt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="Hugging Face Llama folder or llama2.c checkpoint (.bin)")
    parser.add_argument("-z", "--tokenizer", help="llama2.c tokenizer (.bin), sentencepiece model (.model) or a "
                        "folder with a transformers tokenizer; default: tokenizer.bin in the model folder, else the "
                        "folder's own transformers tokenizer (tokenizer.json, tokenizer_config.json)")
    parser.add_argument("-p", "--prompt", default="", help="prompt text")
    parser.add_argument("--tokens", help="prompt as comma-separated token ids instead of text")
    parser.add_argument("-n", "--steps", type=int, default=256, help="tokens to generate")
    parser.add_argument("-t", "--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass")
    parser.add_argument("-s", "--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="activation dtype")
    parser.add_argument("--int8", dest="int8", action="store_true", default=True, help="8-bit Linear layers (default)")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="keep the model in floating point")
    parser.add_argument("--threshold", type=float, default=6.0, help="LLM.int8() outlier threshold")
    parser.add_argument("--skip", default="", help="comma-separated module names kept in floating point")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text and figures")


class _SentencePiece:
    def __init__(self, path):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
        self.vocab_size, self.bos_token_id, self.eos_token_id = self.sp.get_piece_size(), self.sp.bos_id(), self.sp.eos_id()

    def encode(self, text):
        return [self.bos_token_id] + self.sp.encode(text)

    def decode(self, tokens, previous=None):
        return self.sp.decode(tokens)


class _HfTokenizer:
    """A folder's transformers tokenizer (AutoTokenizer: tokenizer.json, tokenizer_config.json)."""

    def __init__(self, folder):
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:  # the tokenizers library raises its own exception types for a bad file
            raise ValueError(f"'{folder}': could not load its transformers tokenizer: {error}") from error
        self.vocab_size, self.bos_token_id, self.eos_token_id = len(self.tok), self.tok.bos_token_id, self.tok.eos_token_id

    def encode(self, text):
        return self.tok.encode(text)  # with the special tokens the folder's config asks for (BOS for Llama)

    def decode(self, tokens, previous=None):
        if previous is None:
            return self.tok.decode(tokens, skip_special_tokens=True)
        # Decoded after the previous token and cut after its text, a token keeps the space it starts with
        # (decoded alone, sentencepiece-style tokenizers drop it).
        head = self.tok.decode([previous], skip_special_tokens=True)
        return self.tok.decode([previous, *tokens], skip_special_tokens=True)[len(head):]


def _load_tokenizer(explicit, folder):
    """-z, else the folder's tokenizer.bin (written by convert-llama2c), else its transformers
    tokenizer; None when there is none (token ids only)."""
    if explicit:
        path = Path(explicit)
        if path.is_dir():
            return _HfTokenizer(path)
        return _SentencePiece(explicit) if explicit.endswith(".model") else Llama2cTokenizer(explicit)
    if (folder / "tokenizer.bin").exists():
        return Llama2cTokenizer(str(folder / "tokenizer.bin"))
    if (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists():
        return _HfTokenizer(folder)
    return None


class _Echo:
    """Text streamed to stdout, remembering whether the last line is still open, so that an error
    never follows the streamed text on the same line."""

    def __init__(self, enabled: bool):
        self.enabled, self.open_line = enabled, False

    def write(self, text: str) -> None:
        if self.enabled and text:
            print(text, end="", flush=True)
            self.open_line = not text.endswith("\n")

    def end_line(self) -> None:
        if self.open_line:
            print(flush=True)
            self.open_line = False


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    logits = logits.float().cpu()
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, -1)
    sorted_p, order = probs.sort(descending=True)
    keep = int((sorted_p.cumsum(0) < top_p).sum()) + 1 if top_p < 1 else len(sorted_p)
    choice = torch.multinomial(sorted_p[:keep] / sorted_p[:keep].sum(), 1, generator=gen)
    return int(order[choice])


def run(args, echo: _Echo = None) -> dict:
    """Loads and generates; streams the prompt and each new token's text through `echo` (once the
    model and tokenizer are loaded, so that a loading error comes alone)."""
    echo = echo if echo is not None else _Echo(False)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    path = Path(args.model)
    if not path.exists():  # never a hub id: nothing is fetched
        raise ValueError(f"'{path}': no such model file or folder")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        llama2c = path.is_file()
        folder = convert_llama2c(str(path), scratch) if llama2c else path
        tokenizer = _load_tokenizer(args.tokenizer, folder)
        import transformers

        # transformers' "Loading weights" bar (each weight is quantized as it is placed): on a terminal only.
        if sys.stderr.isatty():
            transformers.utils.logging.enable_progress_bar()
        else:
            transformers.utils.logging.disable_progress_bar()
        quantization = None
        if args.int8:
            skip = [s for s in args.skip.split(",") if s]
            quantization = Int8Config(llm_int8_threshold=args.threshold, llm_int8_skip_modules=skip or None)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, device_map=args.device, quantization_config=quantization).eval()
    load_seconds = time.perf_counter() - start
    if tokenizer is not None:
        # A transformers model's vocabulary may be padded past its tokenizer's; the other formats match exactly.
        padded = isinstance(tokenizer, _HfTokenizer) and tokenizer.vocab_size < model.config.vocab_size
        if tokenizer.vocab_size != model.config.vocab_size and not padded:
            raise ValueError(f"tokenizer '{args.tokenizer or folder}' has {tokenizer.vocab_size} tokens, "
                             f"the model's vocabulary has {model.config.vocab_size}")
    layers = [m for m in model.modules() if isinstance(m, Linear8bitLt)]
    weight_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    float_bytes = weight_bytes + sum(m.weight.numel() * (dtype.itemsize - 1) - m.weight.SCB.numel() * 4
                                     for m in layers if m.weight.dtype == torch.int8)
    if args.tokens:
        prompt = [int(t) for t in args.tokens.split(",") if t]
    elif tokenizer is not None:
        prompt = tokenizer.encode(args.prompt)
    elif args.prompt:
        raise ValueError("a text prompt needs -z/--tokenizer (or give --tokens)")
    else:
        prompt = [BOS]
    if not prompt:
        raise ValueError("the prompt has no tokens (the tokenizer adds no BOS): give -p TEXT or --tokens")
    context = model.config.max_position_embeddings
    if len(prompt) >= context:
        raise ValueError(f"the prompt has {len(prompt)} tokens, the model's context holds {context}")
    stops = {tokenizer.eos_token_id if tokenizer else EOS} | ({BOS} if llama2c else set())
    steps = min(args.steps, context - len(prompt))
    gen = torch.Generator().manual_seed(args.seed)
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    echo.write(args.prompt)
    generated, ttft, decode_start = [], 0.0, time.perf_counter()
    shown = ""  # the continuation's text streamed so far
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(torch.tensor([prompt], device=device), use_cache=True)
        for step in range(steps):
            token = _sample(out.logits[0, -1], args.temperature, args.top_p, gen)
            if step == 0:
                ttft = time.perf_counter() - t0
                decode_start = time.perf_counter()
            generated.append(token)
            if echo.enabled and tokenizer is not None and token not in stops:
                # The whole continuation is decoded again and only its new end shown: a token decoded alone
                # loses the space or the bytes of a character it shares with its neighbours.
                text = tokenizer.decode([t for t in generated if t not in stops], previous=prompt[-1])
                if text.startswith(shown) and not text.endswith("\ufffd"):
                    echo.write(text[len(shown):])
                    shown = text
            if token in stops or step + 1 == steps:
                break
            out = model(torch.tensor([[token]], device=device), past_key_values=out.past_key_values, use_cache=True)
    decode_seconds = time.perf_counter() - decode_start
    visible = [t for t in generated if t not in stops]
    text = tokenizer.decode(visible, previous=prompt[-1]) if tokenizer else ""
    if text.startswith(shown):  # what was held back (an unfinished character at the end)
        echo.write(text[len(shown):])
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "prompt": args.prompt, "prompt_tokens": prompt, "generated_tokens": generated,
        "text": text,
        "int8": bool(layers), "layers_quantized": len(layers), "weight_bytes_before": float_bytes,
        "weight_bytes_after": weight_bytes, "load_seconds": load_seconds, "time_to_first_token_s": ttft,
        "prompt_tokens_per_s": len(prompt) / ttft if ttft else 0.0,
        "decode_tokens_per_s": (len(generated) - 1) / decode_seconds if len(generated) > 1 and decode_seconds else 0.0,
        "peak_memory_bytes": peak, "device": str(device), "dtype": args.dtype,
    }


def main(args) -> int:
    echo = _Echo(enabled=not args.json)
    try:
        result = run(args, echo)
    except BaseException as error:
        echo.end_line()
        if not isinstance(error, (OSError, ValueError)):
            raise
        print(f"python -m llmint8 generate: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"\n\nload {result['load_seconds']:.2f} s, layers quantized {result['layers_quantized']}, weight bytes "
              f"{result['weight_bytes_before']} -> {result['weight_bytes_after']}, time to first token "
              f"{result['time_to_first_token_s'] * 1e3:.1f} ms, prompt {result['prompt_tokens_per_s']:.0f} tok/s, "
              f"decode {result['decode_tokens_per_s']:.0f} tok/s, peak memory {result['peak_memory_bytes']} bytes")
    return 0
