"""Eval reports and `facet compare`: scores, per-category breakdown, fixed/broken slots, charts."""

from __future__ import annotations

import json

from engine.cli import main
from eval.datasets import read_extraction_gold, schema_from_gold
from eval.harness import evaluate_extraction
from prompts.tasks.extract import Extract

GOLD = [
    {"id": "g1", "input": "Acme Red Mug 12oz", "category": "Mugs",
     "target_scores": {"Brand": {"Acme": 1}, "Color": {"Red": 1}}},
    {"id": "g2", "input": "Zed Blue Mug", "category": "Mugs",
     "target_scores": {"Brand": {"Zed": 1}, "Color": {"Blue": 1}}},
    {"id": "g3", "input": "Bolt Steel Hammer", "category": "Tools",
     "target_scores": {"Brand": {"Bolt": 1}, "Material": {"n/a": 1}}},
]


def _run(tmp_path, name, answers):
    """Eval through the real harness with a scripted backend answering ``answers[id]``."""
    from tests.conftest import ScriptedBackend

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    task = Extract(attribute_schema=schema_from_gold(read_extraction_gold(gold)))
    by_title = {g["input"]: g["id"] for g in GOLD}

    def script(request, _call):
        title = next(t for t in by_title if t in json.dumps(request.prompt))
        return json.dumps(answers[by_title[title]])

    report = evaluate_extraction(ScriptedBackend(script), task, gold, progress=False)
    out = tmp_path / name
    out.mkdir()
    (out / "report.json").write_text(json.dumps(report))
    return out, report


def test_report_scores_categories_and_slots(tmp_path):
    _, rep = _run(tmp_path, "a", {"g1": {"Brand": "Acme", "Color": "Red"}, "g2": {"Brand": "Zed", "Color": None},
                                  "g3": {"Brand": "Bolt", "Material": "Steel"}})
    s = rep["summary"]
    assert (s["tp"], s["fp"], s["fn"]) == (4, 1, 1)  # Material n/a predicted -> FP; Blue missed -> FN
    cats = {c["category"]: c for c in rep["categories"]}
    assert cats["Mugs"]["slots"] == 4 and cats["Tools"]["slots"] == 2
    wrong = {(x["id"], x["attribute"]) for x in rep["slots"] if not x["correct"]}
    assert wrong == {("g2", "Color"), ("g3", "Material")}


def test_compare_lists_fixed_and_broken_slots_and_draws_charts(tmp_path, capsys):
    base, _ = _run(tmp_path, "base", {"g1": {"Brand": "Acme", "Color": "Red"}, "g2": {"Brand": "Zed", "Color": None},
                                      "g3": {"Brand": "Bolt", "Material": None}})
    new, _ = _run(tmp_path, "new", {"g1": {"Brand": "Acme", "Color": None}, "g2": {"Brand": "Zed", "Color": "Blue"},
                                    "g3": {"Brand": "Bolt", "Material": None}})
    out = tmp_path / "cmp"
    assert main(["compare", f"before={base}", f"after={new}", "-o", str(out)]) == 0
    cmp = json.loads((out / "compare.json").read_text())
    assert [r["run"] for r in cmp["runs"]] == ["before", "after"]
    d = cmp["diffs"][0]
    assert (d["fixed"], d["broken"]) == (1, 1)
    assert d["fixed_examples"][0]["id"] == "g2" and d["broken_examples"][0]["id"] == "g1"
    assert {a["attribute"] for a in cmp["per_attribute"]} == {"Brand", "Color", "Material"}
    md = (out / "compare.md").read_text()
    assert "after vs before: 1 slots fixed, 1 broken" in md
    for png in ("per_attribute_f1.png", "score_vs_speed.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "micro-F1" in capsys.readouterr().out


def test_compare_rebuilds_slots_for_older_reports(tmp_path):
    base, rep = _run(tmp_path, "base", {"g1": {"Brand": "Acme", "Color": "Red"}, "g2": {"Brand": "X", "Color": None},
                                        "g3": {"Brand": "Bolt", "Material": None}})
    from eval.compare import slots_of

    kept = rep.pop("slots")
    assert slots_of(rep) == kept


def test_compare_names_a_missing_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope"), "-o", str(tmp_path / "c")]) == 2
    assert "no eval report" in capsys.readouterr().err


def test_compare_refuses_a_report_of_another_task_by_name(tmp_path, capsys):
    run = tmp_path / "cls"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"task": "classify", "summary": {"accuracy": 0.9}}))
    assert main(["compare", str(run), str(run), "-o", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "`facet eval classify` report" in err and "compares extraction runs" in err
