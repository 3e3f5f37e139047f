"""Extraction metric of the OA-Mine / WDC-PAVE line of work (exact match, micro-F1 over the gold slots).

One slot per (product, attribute) present in the gold; predictions for other attributes are
ignored. A missing key, "n/a" or null predicts no value.

=====================  ==================  ===========
gold                   prediction          counts
=====================  ==================  ===========
n/a                    none                ignored
n/a                    a value             FP
value(s)               none                FN
value(s)               one of the golds    TP
value(s)               another value       FP and FN
=====================  ==================  ===========

Equality is exact and case-sensitive after stripping whitespace. An unparseable answer (error
record) predicts nothing for every slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

NA = "n/a"


def _none(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip() in ("", NA))


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    slots: int = 0  # gold slots scored (n/a slots included)

    def add(self, other: Counts) -> None:
        self.slots += other.slots
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def slot_outcome(gold: set[str] | None, pred: str | None) -> Counts:
    """Score one slot. ``gold`` None means the gold says n/a."""
    gold_vals = {g.strip() for g in gold or () if not _none(g)}
    if not gold_vals:
        return Counts(fp=0 if _none(pred) else 1, slots=1)
    if _none(pred):
        return Counts(fn=1, slots=1)
    if pred.strip() in gold_vals:
        return Counts(tp=1, slots=1)
    return Counts(fp=1, fn=1, slots=1)


@dataclass
class ExtractionScore:
    micro: Counts = field(default_factory=Counts)
    by_slot: dict[tuple[str, str], Counts] = field(default_factory=lambda: defaultdict(Counts))
    by_attribute: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    failures: int = 0
    products: int = 0

    @property
    def macro_f1(self) -> float:
        return sum(c.f1 for c in self.by_slot.values()) / len(self.by_slot) if self.by_slot else 0.0

    def summary(self) -> dict:
        return {
            "products": self.products,
            "failures": self.failures,
            "failure_rate": self.failures / self.products if self.products else 0.0,
            "precision": self.micro.precision,
            "recall": self.micro.recall,
            "micro_f1": self.micro.f1,
            "macro_f1": self.macro_f1,
            "tp": self.micro.tp,
            "fp": self.micro.fp,
            "fn": self.micro.fn,
        }


def score_extraction(
    golds: Sequence[dict[str, set[str] | None]],
    preds: Sequence[dict[str, str | None] | None],
    categories: Sequence[str | None] | None = None,
) -> ExtractionScore:
    """``preds[i]`` None = the item failed (counts as predicting nothing)."""
    score = ExtractionScore()
    for i, (gold, pred) in enumerate(zip(golds, preds, strict=True)):
        score.products += 1
        if pred is None:
            score.failures += 1
            pred = {}
        cat = (categories[i] if categories else None) or "*"
        for attr, gvals in gold.items():
            c = slot_outcome(gvals, pred.get(attr))
            score.micro.add(c)
            score.by_slot[(cat, attr)].add(c)
            score.by_attribute[attr].add(c)
    return score


def score_classification(golds: Sequence[Sequence[str]], preds: Sequence[Sequence[str] | None]) -> dict:
    """Accuracy (full path), macro-F1 over gold leaf labels, accuracy per taxonomy level.

    ``preds[i]`` None = the item failed: wrong at every level, and counted in ``failures``.
    """
    golds = [tuple(g) for g in golds]
    preds_t = [tuple(p) if p is not None else None for p in preds]
    n = len(golds)
    correct = sum(1 for g, p in zip(golds, preds_t, strict=True) if p == g)
    labels = sorted({g[-1] for g in golds})
    per_label = {}
    for lab in labels:
        tp = sum(1 for g, p in zip(golds, preds_t, strict=True) if p and g[-1] == lab and p[-1] == lab)
        fp = sum(1 for g, p in zip(golds, preds_t, strict=True) if p and g[-1] != lab and p[-1] == lab)
        fn = sum(1 for g, p in zip(golds, preds_t, strict=True) if g[-1] == lab and (not p or p[-1] != lab))
        c = Counts(tp=tp, fp=fp, fn=fn, slots=tp + fn)
        per_label[lab] = {"support": c.slots, "precision": c.precision, "recall": c.recall, "f1": c.f1}
    depth = max((len(g) for g in golds), default=0)
    levels = []
    for d in range(depth):
        rows = [(g, p) for g, p in zip(golds, preds_t, strict=True) if len(g) > d]
        levels.append(sum(1 for g, p in rows if p is not None and p[: d + 1] == g[: d + 1]) / len(rows))
    return {
        "products": n,
        "failures": sum(1 for p in preds_t if p is None),
        "accuracy": correct / n if n else 0.0,
        "macro_f1": sum(v["f1"] for v in per_label.values()) / len(per_label) if per_label else 0.0,
        "level_accuracy": levels,
        "per_label": per_label,
    }


def ndcg_at_k(order: Sequence[str], relevant, k: int = 3) -> float:
    """Binary-gain NDCG@k: DCG of ``order``'s first k (gain 1 for a relevant item at position i, discounted by
    log2(i + 1) with i from 1) over the DCG of an ideal order. 0.0 for no answer; relevant must be non-empty."""
    import math

    rel = set(relevant)
    if not rel:
        raise ValueError("NDCG needs at least one relevant item")
    dcg = sum(1.0 / math.log2(i + 2) for i, x in enumerate(list(order or ())[:k]) if x in rel)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(rel))))
    return dcg / ideal


def reciprocal_rank(order: Sequence[str], relevant) -> float:
    """1 / position of the first relevant item (0.0 when none is in ``order``)."""
    rel = set(relevant)
    return next((1.0 / i for i, x in enumerate(order or (), 1) if x in rel), 0.0)


def score_query_attribution(golds: list[dict[str, str | None]], predicted: list[list[tuple[int, int, str | None]]],
                            queries: list[str]) -> dict:
    """Phrase -> attribute accuracy. Each gold phrase takes the attribute of the predicted phrase that covers its
    first word (predicted: (start, end, attribute) per phrase). Accuracy over all labelled phrases; precision,
    recall and F1 over the phrases that express an attribute (a wrong attribute is an FP and an FN)."""
    right = total = tp = fp = fn = 0
    wrong = []
    for gold, pred, query in zip(golds, predicted, queries, strict=True):
        for phrase, want in gold.items():
            at = query.find(phrase)
            got = next((a for s, e, a in pred if s <= at < e), None)
            total += 1
            right += got == want
            if want is not None and got == want:
                tp += 1
            else:
                fp += got is not None
                fn += want is not None
            if got != want:
                wrong.append({"query": query, "phrase": phrase, "gold": want, "predicted": got})
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"phrases": total, "accuracy": right / total if total else 0.0, "precision": p, "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0, "mistakes": wrong}
