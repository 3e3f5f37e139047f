"""Readers for the shared evaluation datasets (read by path, never copied into the repo)."""

from __future__ import annotations

import json
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
