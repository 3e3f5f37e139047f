"""The file formats facet reads labelled products from: demonstration pools at inference and gold data in eval
(PriceRunner CSV or JSONL {title, category}; WDC-PAVE raw + normalized twins)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from engine.io import read_jsonl
from schemas import Product


@dataclass(frozen=True)
class ClassGold:
    product: Product
    path: tuple[str, ...]
    group: str | None = None  # e.g. PriceRunner's product cluster: offers of one product share it


def read_classification_gold(path: str | Path) -> list[ClassGold]:
    """PriceRunner CSV (``Product Title``, ``Category Label``, ``Cluster ID``) or JSONL with ``title`` and
    ``category`` (a path written ``Parent > Child``)."""
    path = Path(path)
    rows = []
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"Product Title", "Category Label"}
            if not need <= set(reader.fieldnames or ()):
                raise ValueError(f"{path}: expected columns {sorted(need)}, found {reader.fieldnames}")
            for n, rec in enumerate(reader, 2):
                rows.append(ClassGold(Product(id=rec.get("Product ID") or f"{path.stem}-{n}", title=rec["Product Title"]),
                                      (rec["Category Label"].strip(),), rec.get("Cluster ID")))
        return rows
    for n, rec in read_jsonl(path):
        label = rec.pop("category", None) or rec.pop("label", None)
        if not label:
            raise ValueError(f"{path}: line {n}: no 'category' to score against")
        rec.setdefault("id", f"{path.stem}-{n}")
        rows.append(ClassGold(Product.model_validate(rec), tuple(x.strip() for x in label.split(">")),
                              rec.get("group")))
    return rows


@dataclass(frozen=True)
class NormGold:
    product: Product  # attributes = the raw (extracted) value of every stated attribute
    gold: dict[str, set[str]]  # attribute -> acceptable normalized values


def normalized_twin(raw: str | Path) -> Path:
    """WDC-PAVE keeps the normalized gold of ``train.jsonl`` beside it as ``train_normalized.jsonl``."""
    raw = Path(raw)
    return raw.with_name(raw.stem + "_normalized" + raw.suffix)


def read_normalization_gold(raw: str | Path, normalized: str | Path | None = None) -> list[NormGold]:
    """WDC-PAVE raw + normalized gold (same ids, same order): each product carries the first raw gold value of
    every attribute it states as ``attributes``; the gold is that attribute's normalized values. Attributes
    that are n/a are left out (the published metric ignores n/a vs n/a)."""
    raw = Path(raw)
    normalized = Path(normalized) if normalized else normalized_twin(raw)
    if not normalized.is_file():
        raise FileNotFoundError(f"{normalized} (the normalized gold beside {raw}) does not exist")
    rows = []
    with raw.open(encoding="utf-8") as fr, normalized.open(encoding="utf-8") as fn:
        for n, (a, b) in enumerate(zip(fr, fn, strict=True), 1):
            ra, rb = json.loads(a), json.loads(b)
            if ra.get("id") != rb.get("id"):
                raise ValueError(f"line {n}: raw id {ra.get('id')} != normalized id {rb.get('id')}")
            ra["id"] = str(ra.get("id", f"{raw.stem}-{n}"))
            attrs, gold = {}, {}
            for k, vals in ra["target_scores"].items():
                vals = [v for v in vals if v != "n/a"]
                norm = {v for v in rb["target_scores"].get(k, {}) if v != "n/a"}
                if vals and norm:
                    attrs[k], gold[k] = vals[0], norm
            ra.pop("attributes", None)
            rows.append(NormGold(Product.model_validate({**ra, "attributes": attrs}), gold))
    return rows


def load_examples(path) -> list[dict]:
    """Demonstrations for the model's value choices: JSONL ``{title, category, attribute, value, answer}``, or a
    WDC-PAVE raw file with its ``_normalized`` twin beside it (every attribute's first raw and normalized value)."""
    path = Path(path)
    twin = normalized_twin(path)
    if twin.is_file():
        return [{"title": r.product.title, "category": r.product.category, "attribute": a,
                 "value": r.product.attributes[a], "answer": sorted(g)[0]}
                for r in read_normalization_gold(path, twin) for a, g in r.gold.items()]
    out = []
    for n, rec in read_jsonl(path):
        missing = [k for k in ("attribute", "value", "answer") if k not in rec]
        if missing:
            raise ValueError(f"{path}: line {n}: a demonstration needs attribute, value and answer; {missing} missing")
        out.append(rec)
    return out
