"""Runner logic on a scripted fake backend: re-ask only failures, keep raw text, never raise for one item."""

from __future__ import annotations

import json

from engine.runner import RunStats, iter_task, run_task
from engine.types import Completion
from prompts.tasks.extract import Extract
from schemas import AttributeSchema, ErrorRecord, ExtractionResult, Product

SCHEMA = AttributeSchema.from_mapping({"*": ["brand", "color"]})


def products(n=4):
    return [Product(id=f"p{i}", title=f"Acme Widget {i} Red") for i in range(n)]


def test_only_failed_items_are_re_asked(scripted):
    def script(req, call):
        title = req.prompt[-1]["content"]
        if "Widget 2" in title and call == 1:
            return "{not json"
        return '{"brand":"Acme","color":"Red"}'

    backend = scripted(script)
    stats = RunStats()
    out = run_task(backend, Extract(attribute_schema=SCHEMA), products(), stats=stats)
    assert all(isinstance(r, ExtractionResult) for r in out)
    assert [len(c) for c in backend.calls] == [4, 1]
    assert "Widget 2" in backend.calls[1][0].prompt[-1]["content"]
    assert backend.calls[1][0].temperature > 0  # invalid answer: re-sampled
    assert stats.retried == 1 and stats.done == 4 and stats.failed == 0


def test_truncated_answer_is_re_asked_with_a_bigger_budget(scripted):
    def script(req, call):
        if call == 1:
            return Completion(text='{"brand":"Ac', finish_reason="length")
        return '{"brand":"Acme","color":null}'

    backend = scripted(script)
    out = run_task(backend, Extract(attribute_schema=SCHEMA), products(1))
    first, second = backend.calls[0][0], backend.calls[1][0]
    assert second.max_new_tokens == 2 * first.max_new_tokens
    assert out[0].as_dict() == {"brand": "Acme"} and out[0].missing == ["color"]


def test_persistent_failure_becomes_error_record_with_raw_text(scripted):
    backend = scripted(lambda req, call: "I think the brand is Acme")
    out = run_task(backend, Extract(attribute_schema=SCHEMA), products(2), retries=2)
    assert len(backend.calls) == 3
    for rec, p in zip(out, products(2), strict=True):
        assert isinstance(rec, ErrorRecord)
        assert rec.id == p.id and rec.raw == "I think the brand is Acme" and "not valid JSON" in rec.error


def test_answers_outside_the_schema_are_rejected(scripted):
    answers = iter(['{"brand":"Acme","weight":"2kg"}', "[1,2]", '{"brand":3}'])
    backend = scripted(lambda req, call: next(answers))
    out = run_task(backend, Extract(attribute_schema=SCHEMA), products(3), retries=0)
    assert "not asked for" in out[0].error
    assert "not a JSON object" in out[1].error
    assert "not a string" in out[2].error


def test_grounding_is_recorded(scripted):
    backend = scripted(lambda req, call: '{"brand":"acme","color":"Blue"}')
    res = run_task(backend, Extract(attribute_schema=SCHEMA), [Product(id="x", title="ACME widget, red")])[0]
    g = {a.name: a.grounding for a in res.attributes}
    assert g == {"brand": "normalized", "color": "none"}


def test_iter_task_streams_in_input_order(scripted):
    backend = scripted(lambda req, call: json.dumps({"brand": req.prompt[-1]["content"].split()[2], "color": None}))
    items = products(7)
    out = list(iter_task(backend, Extract(attribute_schema=SCHEMA), items, chunk_size=3))
    assert [r.id for r in out] == [p.id for p in items]
    assert [len(c) for c in backend.calls] == [3, 3, 1]


def test_request_carries_grounded_span_constraint_and_adapter():
    task = Extract(attribute_schema=SCHEMA, adapter="extract")
    req = task.build(Product(id="1", title="Acme Red Mug"))
    props = req.constraint.schema["properties"]
    assert set(props) == {"brand", "color"}
    assert "Acme" in props["brand"]["enum"] and "Red Mug" in props["brand"]["enum"] and None in props["brand"]["enum"]
    assert "Banana" not in props["brand"]["enum"]
    assert req.adapter == "extract"
