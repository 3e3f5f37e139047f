"""complete: fill only what is missing, never overwrite, abstain without evidence, confidence from log-probs."""

from __future__ import annotations

import json
import math

import pytest

from engine.types import Completion
from prompts.tasks.complete import Complete, value_confidence
from schemas import AttributeSchema, ErrorRecord, Product

SCHEMA = AttributeSchema.from_mapping({"Mugs": ["Brand", "Color", {"name": "Material", "values": ["Ceramic", "Steel"]}]})


def test_only_missing_attributes_are_asked_and_the_grammar_allows_spans_values_or_null():
    task = Complete(SCHEMA)
    p = Product(id="a", title="Acme mug, red", category="Mugs", attributes={"brand": "Acme"})
    req = task.build(p)
    props = req.constraint.schema["properties"]
    assert list(props) == ["Color", "Material"]  # Brand is given (case-insensitively): never asked
    assert None in props["Color"]["enum"] and "red" in props["Color"]["enum"]
    assert {"Ceramic", "Steel"} <= set(props["Material"]["enum"])
    text = req.prompt[-1]["content"]
    assert 'Known: {"brand":"Acme"}' in text and "Fill: Color, Material" in text
    assert req.want_logprobs


def test_nothing_to_complete_is_a_clear_error_record(scripted):
    from engine.runner import run_task

    task = Complete(SCHEMA)
    full = Product(id="f", title="Acme mug", category="Mugs", attributes={"Brand": "A", "Color": "r", "Material": "Steel"})
    other = Product(id="o", title="Acme mug", category="Lamps")
    out = run_task(scripted(lambda r, c: pytest.fail("no request should be sent")), task, [full, other])
    assert all(isinstance(r, ErrorRecord) for r in out)
    assert "already given" in out[0].error and "'Lamps'" in out[1].error


def test_values_confidence_source_and_abstention():
    task = Complete(SCHEMA, min_confidence=0.5)
    p = Product(id="a", title="Acme mug, red", category="Mugs", attributes={"Brand": "Acme"})
    text = '{"Color":"red","Material":"Ceramic"}'
    # tokens: '{"Color":"' 're' 'd' '","Material":"' 'Cer' 'amic' '"}'
    toks = [('{"Color":"', -0.01), ("re", math.log(0.9)), ("d", 0.0), ('","Material":"', -0.01),
            ("Cer", math.log(0.3)), ("amic", 0.0), ('"}', 0.0)]
    res = task.parse(Completion(text=text, finish_reason="stop", logprobs=tuple(toks)), p)
    assert [(f.name, f.value, f.source) for f in res.filled] == [("Color", "red", "stated")]
    # the tokens that overlap the value with its quotes: the two boundary tokens count too
    assert res.filled[0].confidence == pytest.approx(0.9 * math.exp(-0.02), rel=1e-3)
    [ab] = res.abstained
    assert ab.name == "Material" and ab.value is None and ab.abstained_value == "Ceramic" and ab.confidence < 0.5
    assert res.as_dict() == {"Brand": "Acme", "Color": "red"}  # the given value untouched


def test_confidence_of_null_and_without_logprobs():
    c = Completion(text='{"Color":null}', finish_reason="stop",
                   logprobs=(('{"Color":', 0.0), ("null", math.log(0.8)), ("}", 0.0)))
    assert value_confidence(c, "Color", None) == pytest.approx(0.8)
    assert value_confidence(Completion(text='{"Color":null}', finish_reason="stop"), "Color", None) == 1.0


def test_tiny_model_end_to_end_with_demonstrations(tiny_backend, tmp_path):
    from engine.runner import run_task
    from prompts.examples import ExamplePool

    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"title": "Zed mug, blue", "category": "Mugs",
                                 "output": {"Brand": "Zed", "Color": "blue"}}) + "\n")
    task = Complete(SCHEMA, examples=ExamplePool.from_jsonl(demos), min_confidence=0.0)
    p = Product(id="a", title="Acme mug, red", category="Mugs", attributes={"Brand": "Acme"})
    assert "Zed mug, blue" in task.messages(p)[1]["content"]  # the demonstration shows its own known/fill split
    [res] = run_task(tiny_backend, task, [p])
    assert res.ok and {f.name for f in res.filled} | {f.name for f in res.abstained} == {"Color", "Material"}
    for f in res.filled:
        assert f.value in task.schema(p)["properties"][f.name]["enum"] and 0.0 <= f.confidence <= 1.0


def test_eval_hides_one_attribute_and_scores_fills_and_abstentions(scripted, tmp_path):
    from eval.datasets import read_extraction_gold
    from eval.harness import evaluate_completion

    data = tmp_path / "validation.jsonl"
    data.write_text(json.dumps({"input": "Acme mug, red", "category": "Mugs",
                                "target_scores": {"Brand": {"Acme": 1}, "Color": {"red": 1}}}) + "\n")
    rows = read_extraction_gold(data)

    def answer(req, _c):
        asked = list(req.constraint.schema["properties"])
        gold = {"Brand": "Acme", "Color": "red"}
        return json.dumps({a: gold.get(a) for a in asked})  # right on the hidden one, null on Material

    report = evaluate_completion(scripted(answer), Complete(SCHEMA), data, rows, progress=False)
    s = report["summary"]
    assert s["fill_accuracy"] == 1.0 and s["hidden_recall"] == 1.0
    assert s["abstention_precision"] == 1.0 and s["false_fill_rate"] == 0.0


def test_cli_and_engine_complete(tmp_path, tiny_model_dir, scripted):
    from engine.api import Engine
    from engine.cli import main

    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"Mugs": ["Brand", "Color"]}))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "title": "Acme mug, red", "category": "Mugs", "attributes": {"Brand": "Acme"}})
                   + "\n" + json.dumps({"id": "b", "title": "Zed mug", "category": "Mugs",
                                        "attributes": {"Brand": "Zed", "Color": "x"}}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["complete", str(src), "--attributes", str(attrs), "-o", str(out), "--model", str(tiny_model_dir),
                 "-q", "--min-confidence", "0"]) == 0
    a, b = [json.loads(x) for x in out.read_text().splitlines()]
    assert a["ok"] and a["given"] == {"Brand": "Acme"} and not b["ok"] and "already given" in b["error"]
    eng = Engine(backend=scripted(lambda r, c: '{"Color":"red"}'))
    r = eng.complete({"title": "Acme mug, red", "category": "Mugs", "attributes": {"Brand": "Acme"}},
                     {"Mugs": ["Brand", "Color"]})
    assert r.as_dict() == {"Brand": "Acme", "Color": "red"} and r.filled[0].confidence == 1.0


def test_cross_check_keeps_a_low_confidence_value_only_when_extraction_finds_it_too(scripted):
    """The second reading: a value under min_confidence is filled (confirmed) when the extraction adapter, asked
    the same attributes of the bare product, finds exactly it; a disagreement stays an abstention."""
    from prompts.tasks.complete import run_complete

    def answer(req, _c):
        if req.adapter == "extract":  # extraction sees the product without its given values, every attribute asked
            assert "Known" not in req.prompt[-1]["content"]
            assert list(req.constraint.schema["properties"]) == ["Brand", "Color", "Material"]
            return '{"Brand":"Acme","Color":"red","Material":"Steel"}'
        toks = (('{"Color":"', 0.0), ("red", math.log(0.2)), ('","Material":"', 0.0), ("Ceramic", math.log(0.2)),
                ('"}', 0.0))
        return Completion(text='{"Color":"red","Material":"Ceramic"}', finish_reason="stop", logprobs=toks)

    backend = scripted(answer)
    backend.adapters = {"complete": "c", "extract": "e"}
    p = Product(id="a", title="Acme mug, red, ceramic or steel", category="Mugs", attributes={"Brand": "Acme"})
    full = Product(id="f", title="Acme mug", category="Mugs", attributes={"Brand": "A", "Color": "r", "Material": "Steel"})
    res, err = run_complete(backend, Complete(SCHEMA, adapter="complete", cross_check="extract"), [p, full], None)
    assert isinstance(err, ErrorRecord)  # nothing to complete: not read again by extraction
    assert [r.adapter for call in backend.calls for r in call].count("extract") == 1
    assert [(f.name, f.value, f.confirmed) for f in res.filled] == [("Color", "red", True)]
    assert [(a.name, a.abstained_value) for a in res.abstained] == [("Material", "Ceramic")]  # extraction: Steel
    assert res.as_dict() == {"Brand": "Acme", "Color": "red"}
    # off, or with no extraction adapter served: the completion adapter alone (and a warning says why)
    [alone] = run_complete(backend, Complete(SCHEMA, adapter="complete"), [p], None)
    assert alone.filled == []
    backend.adapters = {"complete": "c"}
    with pytest.warns(UserWarning, match="no cross-check"):
        [unchecked] = run_complete(backend, Complete(SCHEMA, adapter="complete", cross_check="extract"), [p], None)
    assert unchecked.filled == []


def test_the_cli_serves_the_extraction_adapter_beside_a_completion_adapter(monkeypatch):
    """`facet complete` (and `facet eval complete`) read with the shipped extraction adapter; beside a completion
    adapter (--adapter PATH) they load it for the cross-check, unless --cross-check none or --adapter none."""
    import engine.config
    from engine.cli import _default_adapter, build_parser
    from engine.cli.options import _BACKENDS, backend_for

    loaded = []
    monkeypatch.setattr(engine.config, "load_backend", lambda cfg: loaded.append(cfg.adapters) or object())

    def served(*argv):
        _BACKENDS.clear()
        args = build_parser().parse_args(list(argv))
        _default_adapter(args)
        args.batch_size = 16  # the CLI sets it by backend before loading one
        backend_for(args, "complete")
        return loaded[-1]

    from engine.adapters import resolve_adapter

    extract = resolve_adapter(None, "extract")
    # by default completion reads with the shipped extraction adapter itself: served once
    assert served("complete", "x.jsonl", "--attributes", "a.json") == {"complete": extract}
    assert served("eval", "complete", "--data", "v.jsonl") == {"complete": extract}
    # a completion adapter of the user's: the extraction adapter is served beside it for the cross-check
    assert served("complete", "x.jsonl", "--adapter", "runs/mine") == {"extract": extract, "complete": "runs/mine"}
    assert served("complete", "x.jsonl", "--adapter", "runs/mine", "--cross-check", "none") == {"complete": "runs/mine"}
    assert served("complete", "x.jsonl", "--adapter", "none") == {}
    assert served("complete", "x.jsonl", "--backend", "openai", "--adapter", "complete") == {"complete": "complete"}


def test_an_extraction_adapter_completes_with_the_extraction_prompt(tmp_path, scripted):
    """An adapter trained on extraction (the shipped one) is asked the prompt it was trained on: every attribute of
    the category for the bare product; what it finds fills what the record lacks, except a value inside the text of
    a known value (withheld) and one under min_confidence; the given values stay as they are."""
    from prompts.tasks.base import Setup, build

    folder = tmp_path / "extract"
    folder.mkdir()
    (folder / "facet_provenance.json").write_text(json.dumps({"task": "default", "tasks": ["extract"]}))
    task = build("complete", Setup(adapter=str(folder), adapter_name="extract"), attributes=SCHEMA,
                 min_confidence=0.5)
    assert task.reader is not None and task.cross_check is None
    p = Product(id="a", title="Acme Steel mug, red", category="Mugs", attributes={"Brand": "Acme Steel"})
    req = task.build(p)
    assert req.prompt == tuple(task.reader.messages(p.model_copy(update={"attributes": {}})))
    assert "Known" not in req.prompt[-1]["content"] and req.adapter == "extract" and req.want_logprobs
    assert list(req.constraint.schema["properties"]) == ["Brand", "Color", "Material"]  # extraction's own question
    toks = (('{"Brand":"', 0.0), ("Acme", 0.0), ('","Color":"', 0.0), ("red", math.log(0.9)),
            ('","Material":"', 0.0), ("Steel", math.log(0.8)), ('"}', 0.0))
    text = '{"Brand":"Acme","Color":"red","Material":"Steel"}'
    res = task.parse(Completion(text=text, finish_reason="stop", logprobs=toks), p)
    assert [(f.name, f.value) for f in res.filled] == [("Color", "red")]
    [material] = res.abstained  # "Steel" is part of the known brand's text
    assert (material.name, material.abstained_value, material.withheld) == ("Material", "Steel", "known_value")
    assert res.as_dict() == {"Brand": "Acme Steel", "Color": "red"}
    low = task.parse(Completion(text=text, finish_reason="stop", logprobs=toks[:3] + (("red", math.log(0.2)),)
                                + toks[4:]), p)
    assert low.filled == [] and [a.withheld for a in low.abstained] == ["low_confidence", "known_value"]
    # an adapter trained on completion, or none: the completion prompt
    folder2 = tmp_path / "complete"
    folder2.mkdir()
    (folder2 / "facet_provenance.json").write_text(json.dumps({"tasks": ["complete"]}))
    assert build("complete", Setup(adapter=str(folder2), adapter_name="complete"), attributes=SCHEMA).reader is None
    assert build("complete", Setup(), attributes=SCHEMA).reader is None
    warned = []
    build("complete", Setup(adapter=str(folder), adapter_name="extract", warn=warned.append), attributes=SCHEMA,
          template="mine.j2")
    assert "--template mine.j2 is not used" in warned[0]
    # a client of `facet serve`, which serves the shipped adapters under their folders' names
    assert build("complete", Setup(adapter="extract", adapter_name="extract"), attributes=SCHEMA).reader is not None
