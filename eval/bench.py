"""`facet bench`: grammar compile time, throughput per batch size, constrained vs unconstrained.

Everything is measured side by side in one process on the same prompts, so ratios are meaningful
even on a busy machine; absolute figures are for this machine only.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from engine.runner import RunStats, run_task
from engine.types import JsonSchema


def grammar_compile(tokenizer, schemas: list[dict], engines=("llguidance", "xgrammar")) -> dict:
    """Seconds to get the first token mask for a new schema, and for the same schema again."""
    import torch

    from engine.backends.grammar import GrammarFactory

    out = {}
    vocab = len(tokenizer)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for engine in engines:
        factory = GrammarFactory(tokenizer, engine)
        factory.processor(JsonSchema({"type": "object"}))(ids, torch.zeros((1, vocab)))  # tokenizer set-up
        first, again = [], []
        for schema in schemas:
            for bucket in (first, again):
                t = time.perf_counter()
                factory.processor(JsonSchema(schema))(ids, torch.zeros((1, vocab)))
                bucket.append(time.perf_counter() - t)
        out[engine] = {"schemas": len(schemas), "first_mean_s": statistics.mean(first), "first_max_s": max(first),
                       "repeat_mean_s": statistics.mean(again)}
    return out


def throughput(backend, task, products, batch_sizes) -> list[dict]:
    rows = []
    for bs in batch_sizes:
        backend.batch_size = bs
        stats = RunStats()
        t = time.perf_counter()
        results = run_task(backend, task, products, stats=stats, retries=0)
        constrained_s = time.perf_counter() - t
        # the same prompts and token budgets without the grammar: the cost of constraining
        free = [dataclasses.replace(task.build(p), constraint=None) for p in products]
        t = time.perf_counter()
        comps = backend.generate(free)
        free_s = time.perf_counter() - t
        free_tokens = sum(c.completion_tokens for c in comps)
        rows.append({
            "batch_size": bs,
            "products": len(products),
            "ok": sum(1 for r in results if r.ok),
            "constrained_products_per_s": len(products) / constrained_s,
            "constrained_tokens_per_s": stats.completion_tokens / constrained_s,
            "unconstrained_tokens_per_s": free_tokens / free_s,
            "constrained_vs_unconstrained_tokens_per_s": (stats.completion_tokens / constrained_s)
            / max(1e-9, free_tokens / free_s),
            "prompt_tokens_per_product": stats.prompt_tokens / len(products),
            "completion_tokens_per_product": stats.completion_tokens / len(products),
        })
    return rows


def markdown(report: dict) -> str:
    lines = ["| grammar engine | schemas | first compile (mean / max) | repeat |", "|---|---:|---:|---:|"]
    for eng, g in report["grammar"].items():
        lines.append(f"| {eng} | {g['schemas']} | {g['first_mean_s'] * 1000:.0f} / {g['first_max_s'] * 1000:.0f} ms "
                     f"| {g['repeat_mean_s'] * 1000:.1f} ms |")
    lines += ["", "| batch | products/s | s/product | tokens/s constrained | tokens/s free | ratio |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in report["throughput"]:
        lines.append(f"| {r['batch_size']} | {r['constrained_products_per_s']:.2f} | "
                     f"{1 / r['constrained_products_per_s']:.2f} | {r['constrained_tokens_per_s']:.1f} | "
                     f"{r['unconstrained_tokens_per_s']:.1f} | {r['constrained_vs_unconstrained_tokens_per_s']:.2f} |")
    return "\n".join(lines) + "\n"
