"""Few-shot demonstrations: a pool read from JSONL, chosen per product by similarity."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from schemas import Product

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Example:
    product: Product
    output: dict[str, str]  # gold attribute -> value


def _words(p: Product) -> frozenset[str]:
    return frozenset(w.casefold() for w in _WORD.findall(p.title))


def example_from_record(rec: dict, line: int = 0) -> Example:
    """Accepts ``{"title", "category", "output": {...}}`` or OA-Mine/WDC ``target_scores``."""
    rec = dict(rec)
    rec.setdefault("id", f"example-{line}")
    output = rec.get("output")
    if output is None and "target_scores" in rec:
        output = {}
        for name, values in rec["target_scores"].items():
            vals = [v for v in values if v != "n/a"]
            if vals:
                output[name] = vals[0]
    if not isinstance(output, dict):
        raise ValueError(f"example line {line}: needs an 'output' object of attribute -> value")
    return Example(Product.model_validate(rec), {str(k): str(v) for k, v in output.items() if v is not None})


class ExamplePool:
    """Demonstrations to choose from: same category first, then most word overlap with the title."""

    def __init__(self, examples: list[Example]):
        self.examples = examples
        self._words = [_words(e.product) for e in examples]

    @classmethod
    def from_jsonl(cls, path: str | Path) -> ExamplePool:
        path = Path(path)
        from engine.io import read_jsonl

        out = []
        for n, rec in read_jsonl(path):
            try:
                out.append(example_from_record(rec, n))
            except ValueError as exc:
                raise ValueError(f"{path}: line {n}: {exc}") from None
        if not out:
            raise ValueError(f"{path}: no examples found")
        return cls(out)

    def select(self, product: Product, k: int, exclude_titles: Collection[str] = ()) -> list[Example]:
        """The ``k`` most similar demonstrations, most similar last. ``exclude_titles`` (compared case-folded)
        are never shown: training uses it so that a record, or a changed copy of it, never sees its own answer."""
        if k <= 0:
            return []
        target = _words(product)
        cat = (product.category or "").casefold()
        banned = {t.casefold() for t in exclude_titles}

        def score(i: int):
            e = self.examples[i]
            if (e.product.title == product.title and e.product.id == product.id) or (
                banned and e.product.title.casefold() in banned
            ):
                return (-1, 0.0)  # never show a product its own answer
            same = 1 if cat and (e.product.category or "").casefold() == cat else 0
            w = self._words[i]
            jac = len(target & w) / (len(target | w) or 1)
            return (same, jac)

        ranked = sorted(range(len(self.examples)), key=score, reverse=True)
        chosen = [self.examples[i] for i in ranked[:k] if score(i)[0] >= 0]
        return chosen[::-1]  # most similar last, closest to the question
