"""The real default model (slow: run by `make test` / CI, skipped by a plain `pytest`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import ExtractionResult

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(default_model_dir):
    from engine import Engine

    return Engine(attributes=ROOT / "examples/attributes.json", examples=ROOT / "examples/demonstrations.jsonl",
                  threads=2)


def test_python_api_returns_validated_grounded_attributes(engine):
    r = engine.extract({"id": "p1", "title": "Levi's 501 Original Fit Jeans, Dark Stonewash, W32 L34",
                        "category": "Jeans"})
    assert isinstance(r, ExtractionResult), r
    names = {a.name for a in r.attributes} | set(r.missing)
    assert names == {"Brand", "Model", "Fit", "Color", "Size"}
    assert r.attributes, "the model found nothing at all"
    assert all(a.grounding == "exact" for a in r.attributes)
    assert r.as_dict().get("Brand") in ("Levi's", "Levi's 501")


def test_every_example_product_parses(engine):
    rows = [json.loads(x) for x in (ROOT / "examples/products.jsonl").read_text().splitlines()]
    results = engine.extract_many(rows[:6])
    assert [r.id for r in results] == [r["id"] for r in rows[:6]]
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_open_extraction_on_the_real_model(default_model_dir):
    from engine import Engine

    r = Engine(threads=2).extract("Anker PowerCore 10000 Portable Charger, 10000mAh, USB-C, Black")
    assert r.ok and r.attributes
    assert all(a.value in "Anker PowerCore 10000 Portable Charger, 10000mAh, USB-C, Black" for a in r.attributes)


def test_missing_model_is_one_clear_error(tmp_path):
    from engine import Engine
    from engine.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="never downloads"):
        Engine(model="org/some-model").extract("x")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelNotFoundError, match="neither a Hugging Face model folder"):
        Engine(model=str(tmp_path / "junk")).extract("x")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelNotFoundError, match="Could not read GGUF"):
        Engine(model=str(bad)).extract("x")


def test_few_shot_classification_on_the_real_model(engine):
    """Real titles into the demo taxonomy with the shipped labelled demonstrations: real paths, and
    most of them right (the products' own category names are not shown to the model)."""
    from eval.datasets import read_classification_gold

    demos = [(r.product, r.path) for r in read_classification_gold(ROOT / "examples/labelled.jsonl")]
    rows = [json.loads(x) for x in (ROOT / "examples/products.jsonl").read_text().splitlines()][:6]
    results = engine.classify_many(rows, taxonomy=ROOT / "examples/taxonomy.json", examples=demos)
    assert all(r.ok and r.path and 0 < r.confidence <= 1 for r in results), results
    right = sum(r.label == row["category"] or row["category"] in r.path for r, row in zip(results, rows, strict=True))
    assert right >= 3, [(row["title"], r.path) for r, row in zip(results, rows, strict=True)]
