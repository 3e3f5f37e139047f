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
