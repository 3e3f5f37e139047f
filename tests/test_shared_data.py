"""Checks on the real datasets in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import pytest

from tests.conftest import OA_MINE, needs_data

pytestmark = needs_data()


def test_oa_mine_gold_reads_and_schema_covers_validation_categories():
    from eval.datasets import read_extraction_gold, schema_from_gold

    train = read_extraction_gold(OA_MINE / "train.jsonl")
    val = read_extraction_gold(OA_MINE / "validation.jsonl")
    assert len(train) == 715 and len(val) == 245
    schema = schema_from_gold(train)
    for row in val:
        asked = {a.name for a in schema.for_category(row.product.category)}
        assert set(row.gold) - asked == set() or len(set(row.gold) - asked) <= 1


def test_training_pairs_from_oa_mine_are_mostly_usable():
    from eval.datasets import read_extraction_gold, schema_from_gold
    from finetune.data import DataReport, extract_pairs
    from prompts.tasks.extract import Extract

    rows = read_extraction_gold(OA_MINE / "train.jsonl")
    report = DataReport()
    pairs = extract_pairs(Extract(attribute_schema=schema_from_gold(rows)), rows, report)
    assert len(pairs) > 0.9 * len(rows)


@pytest.mark.slow
def test_eval_harness_runs_on_real_data(tmp_path, default_model_dir):
    import json

    from engine.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "extract", "--data", str(OA_MINE / "validation.jsonl"), "--limit", "4", "-o", str(out),
                 "--threads", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["products"] == 4 and 0 <= report["summary"]["micro_f1"] <= 1
    assert (out / "report.md").read_text().startswith("#")


@pytest.mark.slow
def test_few_shot_classification_on_pricerunner(tmp_path, default_model_dir):
    """12 sampled PriceRunner titles, 3 demonstrations from other product clusters: most are right
    (0.895 on a 200-title sample, see README), and every answer is one of the 10 categories."""
    import json

    from engine.cli import main

    data = OA_MINE.parent / "pricerunner" / "dev.csv"
    out = tmp_path / "cls"
    assert main(["eval", "classify", "--data", str(data), "--limit", "12", "--examples", str(data), "--shots", "3",
                 "-o", str(out), "--threads", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["failures"] == 0 and report["summary"]["accuracy"] >= 0.6
    assert len(report["confusion"]["labels"]) <= 10


def test_wdc_pave_rules_normalize_units_and_wrangling_exactly():
    """The rules read from descriptions.csv, without any model, on the real raw -> normalized gold."""
    from eval.datasets import read_normalization_gold
    from eval.harness import evaluate_normalization
    from prompts.tasks.normalize import Normalize
    from schemas.normalization import NormalizationSpec

    wdc = OA_MINE.parent / "wdc-pave"

    rows = read_normalization_gold(wdc / "train.jsonl")
    task = Normalize(NormalizationSpec.load(wdc / "descriptions.csv"))
    report = evaluate_normalization(None, task, wdc / "train.jsonl", rows, progress=False)
    f1 = {o["operation"]: o["f1"] for o in report["operations"]}
    assert f1["unit conversion"] >= 0.99 and f1["string wrangling"] >= 0.98 and f1["name expansion"] >= 0.9
    assert f1["none"] == 1.0
