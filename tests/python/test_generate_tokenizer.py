"""python -m llmint8 generate on a transformers folder that ships its own tokenizer (tokenizer.json):
the folder's AutoTokenizer is used without -z, and an error never follows the prompt on its line."""

import json
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["<unk>", "<s>", "</s>", "once", "upon", "a", "time", "there", "was", "little", "cat", "dog", "who", "ran",
         "home", "."]


def _tokenizer():
    """A word-level tokenizer that starts every text with <s>, as Llama's does."""
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                                eos_token="</s>")


def _model_folder(path, vocab_size):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A model folder with its tokenizer (vocabulary padded past the tokenizer's, as is common), one
    without, and a tokenizer folder alone."""
    with_tok = _model_folder(tmp_path_factory.mktemp("with-tokenizer"), vocab_size=32)
    _tokenizer().save_pretrained(str(with_tok))
    assert (with_tok / "tokenizer.json").exists()
    tok_only = tmp_path_factory.mktemp("tokenizer")
    _tokenizer().save_pretrained(str(tok_only))
    return {"with": with_tok, "without": _model_folder(tmp_path_factory.mktemp("no-tokenizer"), vocab_size=32),
            "tokenizer": tok_only}


def _generate(*args):
    return subprocess.run([sys.executable, "-m", "llmint8", "generate", *map(str, args)], capture_output=True,
                          text=True, errors="replace", timeout=300)


def test_folder_tokenizer_is_used_without_z(folders):
    tok = transformers.AutoTokenizer.from_pretrained(str(folders["with"]))
    result = _generate("-m", folders["with"], "-p", "once upon a time", "-n", 6, "-t", 0, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["prompt_tokens"] == tok.encode("once upon a time") == [1, 3, 4, 5, 6]
    assert out["generated_tokens"]
    # "text" continues the prompt: together they are the decoded token sequence
    assert "once upon a time" + out["text"] == tok.decode(out["prompt_tokens"] + out["generated_tokens"],
                                                          skip_special_tokens=True)
    # -z naming a folder takes its transformers tokenizer too
    by_z = _generate("-m", folders["without"], "-z", folders["tokenizer"], "-p", "once upon a time", "-n", 6, "-t", 0,
                     "--json")
    assert by_z.returncode == 0, by_z.stderr
    assert json.loads(by_z.stdout.strip().splitlines()[-1])["prompt_tokens"] == out["prompt_tokens"]


def test_streamed_text_is_the_prompt_then_the_decoded_tokens(folders):
    tok = transformers.AutoTokenizer.from_pretrained(str(folders["with"]))
    as_json = json.loads(_generate("-m", folders["with"], "-p", "once upon a time", "-n", 6, "-t", 0,
                                   "--json").stdout.strip().splitlines()[-1])
    result = _generate("-m", folders["with"], "-p", "once upon a time", "-n", 6, "-t", 0)
    assert result.returncode == 0, result.stderr
    streamed = result.stdout.split("\n\nload ")[0]
    # Each token is decoded after the one before it, so the spaces between words survive.
    assert streamed == tok.decode(as_json["prompt_tokens"] + as_json["generated_tokens"], skip_special_tokens=True)


@pytest.mark.parametrize("case", ["no tokenizer", "corrupt tokenizer.json", "tokenizer larger than the vocabulary"])
def test_errors_come_alone_on_stderr(case, folders, tmp_path):
    model, expect = folders["without"], "a text prompt needs -z/--tokenizer"
    if case == "corrupt tokenizer.json":
        model = _model_folder(tmp_path / "corrupt", vocab_size=32)
        (model / "tokenizer.json").write_text("{ not json")
        expect = "could not load its transformers tokenizer"
    elif case == "tokenizer larger than the vocabulary":
        model = _model_folder(tmp_path / "small", vocab_size=8)
        _tokenizer().save_pretrained(str(model))
        expect = f"has {len(WORDS)} tokens, the model's vocabulary has 8"
    result = _generate("-m", model, "-p", "once upon a time", "-n", 4, "-t", 0)
    assert result.returncode == 1 and expect in result.stderr, result.stderr[-800:]
    assert result.stdout == ""  # the prompt is echoed only once the model and tokenizer are loaded
