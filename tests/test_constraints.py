"""The transformers backend on a tiny random Llama: constraints are enforced, batching is real."""

from __future__ import annotations

import json
import re

import pytest

from engine.errors import EngineError
from engine.types import Choice, JsonSchema, Regex, Request

COLOR = {
    "type": "object",
    "properties": {"color": {"enum": [None, "red", "dark blue"]}, "size": {"enum": [None, "XL", "W32 L34"]}},
    "required": ["color", "size"],
    "additionalProperties": False,
}
FREE = {"type": "object", "properties": {"brand": {"type": "string", "maxLength": 8}}, "required": ["brand"],
        "additionalProperties": False}


def msgs(text: str):
    return ({"role": "system", "content": "Extract."}, {"role": "user", "content": text})


@pytest.mark.parametrize("grammar", ["llguidance", "xgrammar"])
def test_json_schema_is_enforced_on_a_random_model(tiny_model, tiny_tokenizer, grammar):
    from engine.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_model, tiny_tokenizer, grammar_engine=grammar, batch_size=3)
    reqs = [Request(prompt=msgs(f"product {i} " * (i + 1)), constraint=JsonSchema(COLOR), max_new_tokens=40)
            for i in range(5)]
    out = backend.generate(reqs)
    assert len(out) == 5
    for c in out:
        assert c.finish_reason == "stop", c
        data = json.loads(c.text)
        assert set(data) == {"color", "size"}
        assert data["color"] in (None, "red", "dark blue") and data["size"] in (None, "XL", "W32 L34")
        assert c.prompt_tokens > 0 and c.completion_tokens > 0


def test_unconstrained_random_model_does_not_produce_json(tiny_model, tiny_tokenizer):
    """Control for the test above: without the constraint the random model emits garbage."""
    from engine.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_model, tiny_tokenizer)
    c = backend.generate([Request(prompt=msgs("product"), max_new_tokens=20)])[0]
    with pytest.raises(ValueError):
        json.loads(c.text)


def test_each_row_gets_its_own_constraint_in_one_batch(tiny_backend):
    reqs = [
        Request(prompt=msgs("a"), constraint=Choice(("yes", "no")), max_new_tokens=5),
        Request(prompt=msgs("bb"), constraint=Regex(r"[0-9]{3}-[a-z]{2}"), max_new_tokens=12),
        Request(prompt=msgs("ccc"), constraint=JsonSchema(FREE), max_new_tokens=30),
        Request(prompt=msgs("dddd"), constraint=JsonSchema(COLOR), max_new_tokens=40),
    ]
    a, b, c, d = tiny_backend.generate(reqs)
    assert a.text in ("yes", "no")
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", b.text), b.text
    assert set(json.loads(c.text)) == {"brand"} and len(json.loads(c.text)["brand"]) <= 8
    assert set(json.loads(d.text)) == {"color", "size"}


def test_batched_results_come_back_in_request_order(tiny_backend):
    # the backend sorts by length internally; answers must still line up with requests
    opts = [(f"opt{i}",) for i in range(6)]
    reqs = [Request(prompt=msgs("x" * (30 - 4 * i)), constraint=Choice(o), max_new_tokens=8) for i, o in enumerate(opts)]
    out = tiny_backend.generate(reqs)
    assert [c.text for c in out] == [o[0] for o in opts]


def test_batching_does_not_change_greedy_answers(tiny_model, tiny_tokenizer):
    from engine.backends.transformers import TransformersBackend

    reqs = [Request(prompt=msgs("w" * (3 + 7 * i)), constraint=JsonSchema(COLOR), max_new_tokens=40) for i in range(4)]
    one = TransformersBackend(tiny_model, tiny_tokenizer, batch_size=1).generate(reqs)
    four = TransformersBackend(tiny_model, tiny_tokenizer, batch_size=4).generate(reqs)
    assert [c.text for c in one] == [c.text for c in four]


def test_token_budget_gives_finish_reason_length(tiny_backend):
    c = tiny_backend.generate([Request(prompt=msgs("x"), constraint=JsonSchema(COLOR), max_new_tokens=3)])[0]
    assert c.finish_reason == "length"
    assert c.completion_tokens == 3


def test_logprobs_are_returned_when_asked(tiny_backend):
    c = tiny_backend.generate([Request(prompt=msgs("x"), constraint=Choice(("yes", "no")), max_new_tokens=4,
                                       want_logprobs=True)])[0]
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    assert all(lp <= 0 for _, lp in c.logprobs)
    assert "".join(t for t, _ in c.logprobs) == c.text


def test_xgrammar_compiles_each_schema_once(tiny_model, tiny_tokenizer):
    from engine.backends.grammar import GrammarFactory

    g = GrammarFactory(tiny_tokenizer, "xgrammar")
    first = g._xgr_compiled(JsonSchema(COLOR))
    again = g._xgr_compiled(JsonSchema(dict(COLOR)))  # equal schema, new object
    assert first is again
    assert g._xgr_compiled(JsonSchema(FREE)) is not first


def test_unknown_adapter_is_a_clear_error(tiny_backend):
    with pytest.raises(EngineError, match="unknown adapter 'nope'"):
        tiny_backend.generate([Request(prompt=msgs("x"), adapter="nope")])


def test_chat_template_is_applied(tiny_backend):
    text = tiny_backend.prompt_text(Request(prompt=msgs("Levi's 501")))
    assert text == "<|im_start|>system\nExtract.<|im_end|>\n<|im_start|>user\nLevi's 501<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("grammar", ["llguidance", "xgrammar"])
def test_open_extraction_schema_is_enforced(tiny_model, tiny_tokenizer, grammar):
    from engine.backends.transformers import TransformersBackend
    from prompts.tasks.extract import Extract
    from schemas import Product

    backend = TransformersBackend(tiny_model, tiny_tokenizer, grammar_engine=grammar)
    task = Extract(max_new_tokens=400)
    p = Product(id="1", title="Acme Steel Bottle 750ml")
    c = backend.generate([task.build(p)])[0]
    assert c.finish_reason == "stop"
    res = task.parse(c, p)
    assert all(a.value in p.title for a in res.attributes)


def test_unsupported_schema_fails_loudly(tiny_backend):
    bad = JsonSchema({"type": "object", "propertyNames": {"maxLength": 3}, "additionalProperties": {"type": "string"}})
    with pytest.raises(EngineError, match="cannot be compiled"):
        tiny_backend.generate([Request(prompt=msgs("x"), constraint=bad)])


def test_a_vocabulary_llguidance_misreads_is_refused(tiny_tokenizer):
    """A grammar engine that sees other bytes in the tokens than the tokenizer does would mask the wrong
    tokens: refuse it with the fix, instead of decoding broken JSON."""
    import llguidance.hf

    from engine.backends.grammar import check_llg_vocabulary

    check_llg_vocabulary(tiny_tokenizer, llguidance.hf.from_tokenizer(tiny_tokenizer))  # the real pair agrees

    class ReadsByteLevelAsText:
        def decode_bytes(self, ids):
            return tiny_tokenizer.decode(ids).replace(" ", "Ġ").encode()

    with pytest.raises(EngineError, match="xgrammar"):
        check_llg_vocabulary(tiny_tokenizer, ReadsByteLevelAsText())


SPAN_SCHEMA = {  # the shape of a span schema, with the awkward characters product text can hold
    "type": "object",
    "properties": {
        "Brand": {"enum": [None, "Café", 'Say "hi"', "back\\slash", "tab\there", "😀", ""]},
        'Size "US"': {"enum": [None, "Café", 'Say "hi"', "back\\slash", "tab\there", "😀", ""]},
        "Colour": {"enum": [None, "Red", "Blue"]},  # an attribute with allowed values: its own rule
    },
    "required": ["Brand", 'Size "US"', "Colour"],
    "additionalProperties": False,
}


def test_span_schema_grammar_accepts_exactly_what_the_json_schema_does():
    """The EBNF written for xgrammar (each enum once) is the JSON schema's own compact language."""
    import itertools

    import xgrammar as xgr
    from xgrammar.testing import _is_grammar_accept_string as accepts

    from engine.backends.grammar import shared_enum_ebnf

    ebnf = shared_enum_ebnf(SPAN_SCHEMA)
    assert ebnf.count("::=") == 3  # root, the spans once, the colours
    ours = xgr.Grammar.from_ebnf(ebnf)
    theirs = xgr.Grammar.from_json_schema(json.dumps(SPAN_SCHEMA), any_whitespace=False, separators=(",", ":"))
    spans, colours = SPAN_SCHEMA["properties"]["Brand"]["enum"], SPAN_SCHEMA["properties"]["Colour"]["enum"]
    texts, canonical = [], set()
    for a, b, c in itertools.product(spans, spans[:3], colours):
        doc = {"Brand": a, 'Size "US"': b, "Colour": c}
        canonical.add(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
        texts += [json.dumps(doc, ensure_ascii=False, separators=(",", ":")),
                  json.dumps(doc, separators=(",", ":")),  # non-ASCII escaped
                  json.dumps(doc, ensure_ascii=False),  # spaces
                  json.dumps(dict(reversed(doc.items())), ensure_ascii=False, separators=(",", ":"))]
    texts += ['{"Brand":null,"Size \\"US\\"":null}', '{"Brand":"Green","Size \\"US\\"":null,"Colour":null}']
    verdicts = [(accepts(ours, t), accepts(theirs, t)) for t in texts]
    assert all(a == b for a, b in verdicts), [t for t, (a, b) in zip(texts, verdicts, strict=True) if a != b]
    assert {t for t, (a, _) in zip(texts, verdicts, strict=True) if a} == canonical


@pytest.mark.parametrize("schema", [
    {**SPAN_SCHEMA, "required": ["Brand"]},  # optional properties
    {**SPAN_SCHEMA, "properties": {"Brand": {"enum": [None, 1]}}, "required": ["Brand"]},  # not strings
    {**SPAN_SCHEMA, "properties": {"Brand": {"anyOf": [{"type": "null"}, {"type": "string"}]}}, "required": ["Brand"]},
    {"type": "object", "patternProperties": {".*": {"enum": [None, "a"]}}, "additionalProperties": False},
    {**SPAN_SCHEMA, "maxProperties": 2},
])
def test_other_schema_shapes_stay_json_schemas(schema):
    from engine.backends.grammar import shared_enum_ebnf

    assert shared_enum_ebnf(schema) is None
