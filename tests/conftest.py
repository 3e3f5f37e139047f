"""Shared fixtures: a tiny random Llama built in memory, a byte-level tokenizer, a scripted backend.

The tiny model (2 layers, width 16) makes plumbing tests run in milliseconds; its answers are
random, which is exactly what constraint tests need. Tests that need the real default model carry
``@pytest.mark.slow``; tests that need ``../shared/data`` skip when it is absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OA_MINE = DATA / "oa-mine"

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer():
    """A byte-level BPE tokenizer with a handful of merges and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("\"", ":"), ("n", "u"), ("l", "l"), ("nu", "ll")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>", additional_special_tokens=specials,
    )
    hf.chat_template = CHATML
    hf.padding_side = "left"
    return hf


def make_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=0.3,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    return make_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny model saved as a standard HF folder (usable as --model PATH)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_model(tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_backend(tiny_model, tiny_tokenizer):
    from engine.backends.transformers import TransformersBackend

    return TransformersBackend(tiny_model, tiny_tokenizer, batch_size=4)


class ScriptedBackend:
    """A fake backend: answers come from ``script(request, call_number)``; records every call."""

    name = "scripted"

    def __init__(self, script: Callable):
        self.script = script
        self.calls: list[list] = []

    def generate(self, requests: Sequence):
        from engine.types import Completion

        self.calls.append(list(requests))
        out = []
        for r in requests:
            ans = self.script(r, len(self.calls))
            out.append(ans if isinstance(ans, Completion) else Completion(text=ans, finish_reason="stop"))
        return out


@pytest.fixture()
def scripted():
    return ScriptedBackend


@pytest.fixture(scope="session")
def default_model_dir():
    """The real default model, prepared once (slow tests only)."""
    from engine.errors import ModelNotFoundError
    from engine.models import resolve_model

    try:
        return resolve_model("smollm2-135m")
    except ModelNotFoundError as exc:
        pytest.fail(str(exc))


def needs_data(path: Path = OA_MINE):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (real data is not committed)")
