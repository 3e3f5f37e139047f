"""Run a task over gold data and score it."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from engine.runner import RunStats, iter_task
from eval.datasets import read_extraction_gold
from eval.metrics import Counts, score_extraction, slot_outcome
from eval.report import file_hash, provenance
from prompts.render import template_hash


def evaluate_extraction(backend, task, data: str | Path, *, limit: int | None = None,
                        batch_size: int = 16, progress: bool = True, **prov) -> dict:
    rows = read_extraction_gold(data)[:limit]
    products = [r.product for r in rows]
    stats = RunStats()
    start = time.perf_counter()
    results = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(products), desc="extract", unit="product")
    for res in iter_task(backend, task, products, chunk_size=max(batch_size * 2, 16), stats=stats):
        results.append(res)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    preds = [r.as_dict() if r.ok else None for r in results]
    score = score_extraction([r.gold for r in rows], preds, [p.category for p in products])
    attrs = sorted(
        ({"attribute": a, "slots": c.slots, "precision": c.precision,
          "recall": c.recall, "f1": c.f1} for a, c in score.by_attribute.items()),
        key=lambda d: d["f1"],
    )
    categories = defaultdict(Counts)
    for (cat, _attr), c in score.by_slot.items():
        categories[cat].add(c)
    cats = sorted(({"category": k, "slots": c.slots, "precision": c.precision, "recall": c.recall, "f1": c.f1}
                   for k, c in categories.items()), key=lambda d: d["f1"])
    mistakes, slots = [], []
    for row, pred in zip(rows, preds):
        for attr, gold in row.gold.items():
            p = (pred or {}).get(attr)
            c = slot_outcome(gold, p)
            slots.append({"id": row.product.id, "attribute": attr, "gold": sorted(gold or []),
                          "predicted": p if pred is not None else "<failed>", "correct": c.fp == c.fn == 0})
            if c.fp or c.fn:
                mistakes.append({"title": row.product.title, "attribute": attr,
                                 "gold": sorted(gold or []), "predicted": p if pred is not None else "<failed>"})
    return {
        "task": "extract",
        "data": str(data),
        "summary": score.summary(),
        "seconds": seconds,
        "seconds_per_product": seconds / max(1, len(products)),
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens,
                   "retried": stats.retried},
        "attributes": attrs,
        "categories": cats,
        "slots": slots,
        "mistakes": mistakes[:: max(1, len(mistakes) // 25)][:25],
        "predictions": [r.model_dump() for r in results],
        "provenance": provenance(data_hash=file_hash(data), template=task.template,
                                 template_hash=template_hash(task.template), shots=task.shots,
                                 grounded=task.grounded, adapter=task.adapter, **prov),
    }
