"""The same behaviour on a CUDA GPU (skipped where torch sees none): constrained batches, shared-prompt
scoring, LoRA training with bf16 autocast. Run wherever a GPU is available; CI machines have none."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")

SCHEMA = {"type": "object", "properties": {"color": {"enum": [None, "red", "dark blue"]}},
          "required": ["color"], "additionalProperties": False}


@pytest.fixture()
def gpu_backend(tiny_model, tiny_tokenizer):
    from engine.backends.transformers import TransformersBackend

    return TransformersBackend(tiny_model.to("cuda"), tiny_tokenizer, batch_size=4)


def test_constrained_batch_on_the_gpu_matches_the_cpu(tiny_model, tiny_tokenizer):
    import copy

    from engine.backends.transformers import TransformersBackend
    from engine.types import JsonSchema, Request

    reqs = [Request(({"role": "user", "content": f"mug {i}"},), JsonSchema(SCHEMA), max_new_tokens=24)
            for i in range(6)]
    cpu = TransformersBackend(copy.deepcopy(tiny_model), tiny_tokenizer, batch_size=4).generate(reqs)
    gpu = TransformersBackend(tiny_model.to("cuda"), tiny_tokenizer, batch_size=4).generate(reqs)
    for c in gpu:
        assert json.loads(c.text)["color"] in (None, "red", "dark blue")
    assert [c.text for c in gpu] == [c.text for c in cpu]


def test_scores_on_the_gpu_match_the_cpu(gpu_backend, tiny_tokenizer):
    from engine.types import ScoreRequest

    prompt = ({"role": "user", "content": "a product title"},)
    reqs = [ScoreRequest(prompt, c) for c in ("Mugs", "Skillets and frying pans", "x")]
    got = gpu_backend.score(reqs)
    model_cpu = gpu_backend.model.to("cpu")
    gpu_backend.model = model_cpu
    assert got == pytest.approx(gpu_backend.score(reqs), abs=1e-3)


def test_loader_puts_the_model_on_the_gpu(tiny_model_dir):
    from engine.models import load_model

    assert load_model(tiny_model_dir).device.type == "cuda"
    assert load_model(tiny_model_dir, device="cpu").device.type == "cpu"


def test_lora_training_on_the_gpu_with_bf16_lowers_the_loss(tmp_path, tiny_model, tiny_tokenizer):
    from finetune.train import evaluate_loss, train
    from tests.test_finetune import cfg, encoded, gold_rows

    tok = tiny_tokenizer
    tok.padding_side = "right"
    data = encoded(tok, gold_rows())
    model = tiny_model.to("cuda")
    before = evaluate_loss(model, data, 4, tok.pad_token_id, bf16=True)
    train(model, tok, data, data[:4], cfg(max_steps=12, bf16=True), tmp_path / "ad", progress=False)
    assert evaluate_loss(model, data, 4, tok.pad_token_id, bf16=True) < before * 0.8
    assert (tmp_path / "ad" / "adapter_model.safetensors").is_file()
