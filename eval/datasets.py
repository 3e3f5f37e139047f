"""Readers for the shared evaluation datasets (read by path, never copied into the repo)."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from schemas import AttributeSchema, Product


@dataclass(frozen=True)
class GoldProduct:
    product: Product
    gold: dict[str, set[str] | None]  # attribute -> acceptable values; None = n/a


def _gold(target_scores: dict) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for attr, values in target_scores.items():
        vals = {v for v in values if v != "n/a"}
        out[attr] = vals or None
    return out


def read_extraction_gold(path: str | Path) -> list[GoldProduct]:
    """OA-Mine (``input``) and WDC-PAVE (``input_title``/``input_description``) JSONL."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            rec.setdefault("id", f"{path.stem}-{n}")
            rows.append(GoldProduct(Product.model_validate(rec), _gold(rec["target_scores"])))
    return rows


def schema_from_gold(rows: list[GoldProduct], min_count: int = 1) -> AttributeSchema:
    """category -> attributes seen in a (training) split, most frequent first."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        for attr in r.gold:
            counts[r.product.category or "*"][attr] += 1
    return AttributeSchema.from_mapping(
        {cat: [a for a, c in cnt.most_common() if c >= min_count] for cat, cnt in sorted(counts.items())}
    )


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
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            label = rec.pop("category", None) or rec.pop("label", None)
            if not label:
                raise ValueError(f"{path}: line {n}: no 'category' to score against")
            rec.setdefault("id", f"{path.stem}-{n}")
            rows.append(ClassGold(Product.model_validate(rec), tuple(x.strip() for x in label.split(">")),
                                  rec.get("group")))
    return rows


def split_by_group(rows: list[ClassGold], n: int | None, seed: int = 0) -> tuple[list[ClassGold], list[ClassGold]]:
    """A seeded random sample of ``n`` rows to evaluate, and the rest minus every group that appears in the
    sample (a demonstration pool that never shows another offer of a product being evaluated)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    chosen = sorted(order[:n] if n else order)
    sample = [rows[i] for i in chosen]
    taken = {r.group for r in sample if r.group is not None}
    picked = set(chosen)
    rest = [r for i, r in enumerate(rows) if i not in picked and (r.group is None or r.group not in taken)]
    return sample, rest


@dataclass(frozen=True)
class NormGold:
    product: Product  # attributes = the raw (extracted) value of every stated attribute
    gold: dict[str, set[str]]  # attribute -> acceptable normalized values


def read_normalization_gold(raw: str | Path, normalized: str | Path | None = None) -> list[NormGold]:
    """WDC-PAVE raw + normalized gold (same ids, same order): each product carries the first raw gold value of
    every attribute it states as ``attributes``; the gold is that attribute's normalized values. Attributes
    that are n/a are left out (the published metric ignores n/a vs n/a)."""
    raw = Path(raw)
    normalized = Path(normalized) if normalized else raw.with_name(raw.stem + "_normalized" + raw.suffix)
    if not normalized.is_file():
        raise FileNotFoundError(f"{normalized} (the normalized gold beside {raw}) does not exist")
    rows = []
    with raw.open(encoding="utf-8") as fr, normalized.open(encoding="utf-8") as fn:
        for n, (a, b) in enumerate(zip(fr, fn), 1):
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
