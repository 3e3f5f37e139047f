"""`facet bench`: grammar compile time, throughput per batch size, constrained vs unconstrained, and
backends side by side (transformers, vLLM in-process with LoRA or a merged adapter, vLLM's server).

Everything is measured side by side in one process on the same prompts, so ratios are meaningful
even on a busy machine; absolute figures are for this machine only.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from engine.runner import RunStats, run_task
from engine.types import Choice, JsonSchema, PrefixCachingBackend


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


def backend_run(backend, task, products, *, compare_base: bool = True) -> dict:
    """One backend, side by side on the same products: constrained with the task's adapter; the same
    requests unconstrained with each row's budget cut to its constrained answer's length (the same
    output lengths, so tokens/s compare like for like); and the cost of the adapter: the same prompts with
    and without it, each forced to write the adapter's answer (a one-option choice), so both runs do the
    same work (the base model's own answers are longer, which would flatter its tokens/s).

    A backend with a prefix cache across calls (vLLM) has it reset before the constrained and the free run:
    otherwise the free run, second, finds every prompt already computed and looks faster than it is."""
    reqs = [task.build(p) for p in products]
    reset = backend.reset_prefix_cache if isinstance(backend, PrefixCachingBackend) else None
    resets = []

    def timed(requests, cold: bool = False):
        if cold and reset is not None:
            resets.append(reset())
        t = time.perf_counter()
        comps = backend.generate(requests)
        return comps, time.perf_counter() - t

    backend.generate(reqs[:2])  # warm-up: grammar set-up, adapter load, compiled kernels
    comps, s = timed(reqs, cold=True)
    ok = 0
    for c, p in zip(comps, products, strict=True):
        try:
            task.parse(c, p)
            ok += 1
        except Exception:  # noqa: BLE001 - counted, not raised
            pass
    tokens = sum(c.completion_tokens for c in comps)
    free, free_s = timed([dataclasses.replace(r, constraint=None, max_new_tokens=max(1, c.completion_tokens))
                          for r, c in zip(reqs, comps, strict=True)], cold=True)
    free_tokens = sum(c.completion_tokens for c in free)
    row = {"products": len(products), "ok": ok, "products_per_s": len(products) / s,
           "tokens_per_s": tokens / s, "unconstrained_tokens_per_s": free_tokens / free_s,
           "constrained_vs_unconstrained": (tokens / s) / max(1e-9, free_tokens / free_s),
           "completion_tokens_per_product": tokens / len(products),
           # share of the constrained run's prompt tokens served from the prefix cache (0 where not reported)
           "prompt_cached": sum(c.cached_prompt_tokens for c in comps) / max(1, sum(c.prompt_tokens for c in comps)),
           # None: no cache kept across calls; False: a cache the backend could not reset (ratio flatters free)
           "prefix_cache_reset": all(resets) if reset is not None else None}
    if task.adapter is not None and compare_base:
        forced = [dataclasses.replace(r, constraint=Choice((c.text,)), max_new_tokens=c.completion_tokens + 8)
                  for r, c in zip(reqs, comps, strict=True)]
        try:
            # the adapter's prompts are in the prefix cache (which is kept per adapter) from the runs above:
            # put the base model's there too, so both timed runs start warm
            backend.generate([dataclasses.replace(r, adapter=None, constraint=None, max_new_tokens=1) for r in reqs])
            _, base_s = timed([dataclasses.replace(r, adapter=None) for r in forced])
        except Exception as exc:  # noqa: BLE001 - e.g. a merged-adapter engine serves no base model
            row["no_adapter"] = str(exc)
        else:
            _, with_s = timed(forced)
            row["forced_products_per_s"] = len(products) / with_s
            row["no_adapter_forced_products_per_s"] = len(products) / base_s
            row["adapter_vs_no_adapter"] = base_s / with_s
    return row


def backends_markdown(rows: dict[str, dict]) -> str:
    first = next(iter(rows.values()))
    lines = [f"| backend | grammar | products/s | s/product | tokens/s | prompt cached | constrained / free | "
             f"adapter / none | vs {next(iter(rows))} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        ratio = r.get("adapter_vs_no_adapter")
        warm = " (free run's prompts cached)" if r.get("prefix_cache_reset") is False else ""
        label = name + (f" ({r['concurrency']} in flight)" if r.get("concurrency") else "")
        lines.append(f"| {label} | {r.get('grammar') or '?'} | {r['products_per_s']:.2f} | {1 / r['products_per_s']:.2f} | {r['tokens_per_s']:.0f} "
                     f"| {r.get('prompt_cached', 0):.0%} | {r['constrained_vs_unconstrained']:.2f}{warm} | {f'{ratio:.2f}' if ratio else 'n/a'} "
                     f"| {r['products_per_s'] / first['products_per_s']:.1f}x |")
    return "\n".join(lines) + "\n"


def markdown(report: dict) -> str:
    lines = ["| grammar engine | schemas | first compile (mean / max) | repeat |", "|---|---:|---:|---:|"]
    if not report["grammar"]:
        lines = ["(grammars compiled by the server: not timed here)"]
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
