"""Run a task over gold data and score it."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from engine.runner import RunStats
from eval.datasets import read_extraction_gold
from eval.metrics import Counts, score_extraction, slot_outcome
from eval.report import file_hash, provenance
from prompts.render import template_hash


def slot_records(pid: str, gold: dict, pred: dict | None) -> list[dict]:
    """One record per gold slot of a product: gold, prediction (``<failed>`` for an error) and outcome."""
    out = []
    for attr, g in gold.items():
        p = (pred or {}).get(attr)
        c = slot_outcome(g, p)
        out.append({"id": pid, "attribute": attr, "gold": sorted(g or []),
                    "predicted": p if pred is not None else "<failed>", "correct": c.fp == c.fn == 0})
    return out


def _score_rows(key: str, counts, worst_first: bool = False) -> list[dict]:
    """Report rows ``{key: name, slots, precision, recall, f1}`` from (name, Counts) pairs, in their order or
    lowest F1 first."""
    rows = [{key: k, "slots": c.slots, "precision": c.precision, "recall": c.recall, "f1": c.f1} for k, c in counts]
    return sorted(rows, key=lambda d: d["f1"]) if worst_first else rows


def _results(name: str, backend, task, items: list, batch_size: int, stats: RunStats):
    """A registered task's results over ``items``, chunk by chunk as the CLI runs it (its TaskDef's run)."""
    from prompts.tasks.base import get

    td = get(name)
    size = max(batch_size * 2, 16) if td.batch == "chunk" else batch_size
    for i in range(0, len(items), size):
        yield from td.run(backend, task, items[i : i + size], stats, None)


def _timed(results, total: int, desc: str, progress: bool) -> tuple[list, float]:
    """Drain a result stream under a progress bar; the results and the seconds it took."""
    from tqdm import tqdm

    start = time.perf_counter()
    out = list(tqdm(results, total=total, desc=desc, unit="product", disable=not progress))
    return out, time.perf_counter() - start


def evaluate_extraction(backend, task, data: str | Path, *, limit: int | None = None,
                        batch_size: int = 16, progress: bool = True, normalize=None,
                        normalized_gold: str | Path | None = None, **prov) -> dict:
    """Score extraction on gold ``data``. With ``normalize`` (a Normalize task) and ``normalized_gold`` (the same
    products' normalized gold, e.g. WDC-PAVE's ``train_normalized.jsonl``) the extracted values are also
    normalized and scored end to end, under ``report["end_to_end"]``."""
    rows = read_extraction_gold(data)[:limit]
    products = [r.product for r in rows]
    stats = RunStats()
    results, seconds = _timed(_results("extract", backend, task, products, batch_size, stats), len(products),
                              "extract", progress)
    preds = [r.as_dict() if r.ok else None for r in results]
    score = score_extraction([r.gold for r in rows], preds, [p.category for p in products])
    attrs = _score_rows("attribute", score.by_attribute.items(), worst_first=True)
    categories = defaultdict(Counts)
    for (cat, _attr), c in score.by_slot.items():
        categories[cat].add(c)
    cats = _score_rows("category", categories.items(), worst_first=True)
    mistakes, slots = [], []
    for row, pred in zip(rows, preds, strict=True):
        for s in slot_records(row.product.id, row.gold, pred):
            slots.append(s)
            if not s["correct"]:
                mistakes.append({"title": row.product.title, **{k: s[k] for k in ("attribute", "gold", "predicted")}})
    report = {
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
    if normalize is not None:
        report["end_to_end"] = _normalize_extracted(backend, normalize, rows, results, normalized_gold,
                                                    batch_size=batch_size, progress=progress)
    return report


def _normalize_extracted(backend, task, rows: list, results: list, normalized: str | Path, *, batch_size: int,
                         progress: bool) -> dict:
    """Extraction then normalization, as a catalogue runs them (the published "extraction + normalization"
    figure): every value the extraction found is normalized by ``task`` and the result scored with the
    extraction metric against the normalized gold of the same products. A failed extraction scores as a failure;
    a product with nothing found predicts nothing."""
    from prompts.tasks.normalize import normalize_found

    gold = {g.product.id: g.gold for g in read_extraction_gold(normalized)}
    if lost := [r.product.id for r in rows if r.product.id not in gold]:
        raise ValueError(f"{normalized}: no normalized gold for product id(s) {', '.join(lost[:5])}"
                         f"{' ...' if len(lost) > 5 else ''}; it must hold the same products as the extraction gold")
    stats = RunStats()
    done, seconds = _timed(normalize_found(backend, task, [r.product for r in rows], results, batch_size, stats),
                           len(rows), "normalize", progress)
    preds = [_normalized_prediction(r) for r in done]
    golds = [gold[r.product.id] for r in rows]
    score = score_extraction(golds, preds, [r.product.category for r in rows])
    by_op: dict[str, Counts] = defaultdict(Counts)
    for (cat, attr), c in score.by_slot.items():
        rule = task.spec.rule_for(cat, attr)
        by_op[rule.operation if rule else "none"].add(c)
    mistakes = []
    for row, res, pred in zip(rows, done, preds, strict=True):
        found = res.as_dict() if res.ok else {}
        for s in slot_records(row.product.id, gold[row.product.id], pred):
            if not s["correct"]:
                mistakes.append({"title": row.product.title, "attribute": s["attribute"], "gold": s["gold"],
                                 "extracted": found.get(s["attribute"]) if res.ok else "<failed>",
                                 "predicted": s["predicted"]})
    return {
        "data": str(normalized),
        "summary": score.summary(),
        "operations": _score_rows("operation", sorted(by_op.items())),
        "seconds": seconds,
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens, "model_calls": stats.calls},
        "mistakes": mistakes[:: max(1, len(mistakes) // 25)][:25],
        "predictions": [{"id": r.product.id, "attributes": p} for r, p in zip(rows, preds, strict=True)],
    }


def _normalized_prediction(result) -> dict | None:
    """What an extraction + normalization predicts: None (a failure) when either step failed, nothing when the
    extraction found nothing."""
    if not result.ok:
        return None
    if result.normalized is not None:
        return result.normalized.attributes
    return None if result.attributes else {}


def evaluate_classification(backend, task, data: str | Path, rows: list, *, seed: int = 0,
                            batch_size: int = 16, progress: bool = True, **prov) -> dict:
    """Score classify on ``rows`` (ClassGold), a sample of ``data`` drawn with ``seed`` by
    :func:`eval.datasets.split_by_group`, whose rest is where demonstrations may come from."""
    from eval.datasets import within_gold
    from eval.metrics import score_classification

    stats = RunStats()
    products = [r.product for r in rows]
    results, seconds = _timed(_results("classify", backend, task, products, batch_size, stats), len(products),
                              "classify", progress)
    # a gold node that is not a leaf is right for any category under it
    preds = [within_gold(g.path, tuple(r.path)) if r.ok else None for g, r in zip(rows, results, strict=True)]
    score = score_classification([r.path for r in rows], preds)
    labels = sorted({r.path[-1] for r in rows} | {p[-1] for p in preds if p})
    confusion = [[sum(1 for r, p in zip(rows, preds, strict=True) if r.path[-1] == g and p and p[-1] == q) for q in labels]
                 for g in labels]
    reviewed = [(r, res) for r, res in zip(rows, results, strict=True) if res.ok]
    flagged = [within_gold(r.path, tuple(res.path)) == r.path for r, res in reviewed if res.needs_review]
    trusted = [within_gold(r.path, tuple(res.path)) == r.path for r, res in reviewed if not res.needs_review]
    mistakes = [{"title": r.product.title, "gold": " > ".join(r.path),
                 "predicted": " > ".join(res.path) if res.ok else f"<failed: {res.error}>",
                 "confidence": res.confidence if res.ok else None}
                for r, res in zip(rows, results, strict=True) if not res.ok or within_gold(r.path, tuple(res.path)) != r.path]
    return {
        "task": "classify",
        "data": str(data),
        "summary": {k: v for k, v in score.items() if k != "per_label"},
        "per_label": score["per_label"],
        "confusion": {"labels": labels, "matrix": confusion},
        "review": {"threshold": task.review_below, "flagged": len(flagged),
                   "flagged_accuracy": sum(flagged) / len(flagged) if flagged else None,
                   "trusted": len(trusted), "trusted_accuracy": sum(trusted) / len(trusted) if trusted else None},
        "seconds": seconds,
        "seconds_per_product": seconds / max(1, len(rows)),
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
        "mistakes": mistakes[:25],
        "predictions": [r.model_dump() for r in results],
        "provenance": provenance(data_hash=file_hash(data), template=task.template,
                                 template_hash=template_hash(task.template), shots=task.shots if task.examples else 0,
                                 sample=len(rows), seed=seed, taxonomy=task.taxonomy.name,
                                 vote={"titles": len(task.vote.rows), "from": task.vote.name, "weight": task.vote_weight}
                                 if task.vote is not None and task.vote_weight > 0 else None, **prov),
    }


def evaluate_normalization(backend, task, data: str | Path, rows: list, *, batch_size: int = 16,
                           progress: bool = True, **prov) -> dict:
    """Normalize each product's raw gold values and score against the normalized gold, per operation
    (the attribute's rule in the spec) and per decider (rule, colour library, model)."""

    stats = RunStats()
    products = [r.product for r in rows]
    results, seconds = _timed(_results("normalize", backend, task, products, batch_size, stats), len(products),
                              "normalize", progress)
    by_op: dict[str, Counts] = defaultdict(Counts)
    by_how: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    total, mistakes = Counts(), []
    for row, res in zip(rows, results, strict=True):
        how = {c.attribute: c.by for c in res.changes if c.field == "value"} if res.ok else {}
        for attr, gold in row.gold.items():
            rule = task.spec.rule_for(row.product.category, attr)
            op = rule.operation if rule else "none"
            pred = res.attributes.get(attr) if res.ok else None
            c = slot_outcome(gold, pred)
            by_op[op].add(c)
            total.add(c)
            decider = how.get(attr, "unchanged")
            by_how[decider][0] += c.tp
            by_how[decider][1] += 1
            if c.tp == 0:
                mistakes.append({"title": row.product.title, "attribute": attr, "operation": op,
                                 "raw": row.product.attributes[attr], "gold": sorted(gold),
                                 "predicted": pred if res.ok else f"<failed: {res.error}>", "by": decider})
    ops = _score_rows("operation", sorted(by_op.items()))
    return {
        "task": "normalize",
        "data": str(data),
        "summary": {"products": len(rows), "failures": sum(1 for r in results if not r.ok), "slots": total.slots,
                    "precision": total.precision, "recall": total.recall, "micro_f1": total.f1},
        "operations": ops,
        "deciders": {k: {"slots": n, "accuracy": tp / n} for k, (tp, n) in sorted(by_how.items())},
        "seconds": seconds,
        "seconds_per_product": seconds / max(1, len(rows)),
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens, "model_calls": stats.calls},
        "mistakes": mistakes[:40],
        "predictions": [r.model_dump() for r in results],
        "provenance": provenance(data_hash=file_hash(data), template=task.template,
                                 template_hash=template_hash(task.template),
                                 shots=task.shots if task.examples else 0, **prov),
    }


def hide_one(rows: list, seed: int = 0) -> list[tuple]:
    """(product with all gold attributes but one as known ``attributes``, hidden name, its gold values) per row
    with at least one valued gold attribute; the hidden attribute is drawn per product with ``seed``."""
    from prompts.tasks.complete import pick_hidden

    out = []
    for r in rows:
        valued = sorted(k for k, v in r.gold.items() if v)
        if not valued:
            continue
        hidden = pick_hidden(valued, r.product.id, seed)
        known = {k: sorted(r.gold[k])[0] for k in valued if k != hidden}
        out.append((r.product.model_copy(update={"attributes": known}), hidden, r.gold[hidden], set(r.gold)))
    return out


def evaluate_completion(backend, task, data: str | Path, rows: list, *, seed: int = 0, batch_size: int = 16,
                        progress: bool = True, **prov) -> dict:
    """Hide one gold attribute per product, give the others as known, ask for every attribute the category
    should have. Scored: the hidden attribute (filled right / wrong / abstained) and the attributes the gold
    does not list (OA-Mine lists only attributes the title states, so filling them is a false fill and
    abstaining is right)."""
    cases = hide_one(rows, seed)
    products = [c[0] for c in cases]
    stats = RunStats()
    results, seconds = _timed(_results("complete", backend, task, products, batch_size, stats), len(products),
                              "complete", progress)
    n = defaultdict(int)
    conf_right, conf_wrong, mistakes = [], [], []
    for (product, hidden, gold, listed), res in zip(cases, results, strict=True):
        n["hidden"] += 1
        if not res.ok:
            n["failures"] += 1
            continue
        filled = {f.name: f for f in res.filled}
        for f in res.abstained:
            n["abstained"] += 1
            if f.name == hidden:
                n["hidden_abstained"] += 1
                n["hidden_withheld_right"] += f.abstained_value in gold  # right, but under min_confidence
            elif f.name not in listed:
                n["abstained_right"] += 1
        f = filled.get(hidden)
        if f is not None:
            right = f.value in gold
            n["hidden_filled"] += 1
            n["hidden_right"] += right
            n[f"{f.source}_filled"] += 1
            n[f"{f.source}_right"] += right
            (conf_right if right else conf_wrong).append(f.confidence)
            if not right:
                mistakes.append({"title": product.title, "attribute": hidden, "gold": sorted(gold),
                                 "predicted": f.value, "confidence": f.confidence, "source": f.source})
        for name in filled:
            if name != hidden and name not in listed:
                n["false_fills"] += 1
        n["absent_asked"] += sum(1 for a in task.wanted(product) if a.name != hidden and a.name not in listed)

    def ratio(a, b):
        return n[a] / n[b] if n[b] else None

    return {
        "task": "complete",
        "data": str(data),
        "summary": {"products": n["hidden"], "failures": n["failures"],
                    "fill_accuracy": ratio("hidden_right", "hidden_filled"),
                    "hidden_recall": ratio("hidden_right", "hidden"),
                    "hidden_abstained": n["hidden_abstained"],
                    "hidden_withheld_right": n["hidden_withheld_right"],
                    "abstention_precision": ratio("abstained_right", "abstained"),
                    "false_fill_rate": ratio("false_fills", "absent_asked"),
                    "stated": {"filled": n["stated_filled"], "accuracy": ratio("stated_right", "stated_filled")},
                    "inferred": {"filled": n["inferred_filled"], "accuracy": ratio("inferred_right", "inferred_filled")},
                    "mean_confidence_right": sum(conf_right) / len(conf_right) if conf_right else None,
                    "mean_confidence_wrong": sum(conf_wrong) / len(conf_wrong) if conf_wrong else None,
                    "min_confidence": task.min_confidence},
        "counts": dict(n),
        "seconds": seconds,
        "seconds_per_product": seconds / max(1, len(products)),
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
        "mistakes": mistakes[:25],
        "predictions": [r.model_dump() for r in results],
        "provenance": provenance(data_hash=file_hash(data), template=task.template, seed=seed,
                                 template_hash=template_hash(task.template),
                                 shots=task.shots if task.examples else 0, adapter=task.adapter, **prov),
    }


def rank_demos(rows: list) -> tuple:
    """Demonstrations for ranking from gold cases: each case's first relevant attribute (in the case's order) is
    the answer. The task never shows a case a demo about the same product (here: the same query class)."""
    from prompts.tasks.rank import RankExample

    return tuple(RankExample(r.request, next(n for n in r.request.names if n in r.relevant)) for r in rows)


def _query_names(query: str | None, name: str) -> bool:
    """Whether the search names the attribute: its name, or its last word ('color' for 'Cover color')."""
    from prompts.spans import mentions, words

    last = (words(name) or [""])[-1]
    return bool(query) and (mentions(query, name) or (len(last) > 2 and mentions(query, last)))


def evaluate_ranking(backend, task, data: str | Path, rows: list, *, k: int = 3, batch_size: int = 16,
                     seed: int = 0, progress: bool = True, **prov) -> dict:
    """NDCG@k and MRR of the model's order against the attributes each query mentions, beside two baselines
    measured on the same cases: the order the attributes were given in (Shopify's) and a random order (mean of
    100 seeded shuffles per case)."""
    import random

    from eval.metrics import ndcg_at_k, reciprocal_rank

    stats = RunStats()
    results, seconds = _timed(_results("rank", backend, task, [r.request for r in rows], batch_size, stats), len(rows),
                              "rank", progress)
    rng = random.Random(seed)
    scores = defaultdict(float)
    hits, seen, mistakes = defaultdict(int), defaultdict(int), []
    for row, res in zip(rows, results, strict=True):
        names, rel = list(row.request.names), row.relevant
        order = res.order() if res.ok else []
        scores["ndcg"] += ndcg_at_k(order, rel, k)
        scores["mrr"] += reciprocal_rank(order, rel)
        scores["top1"] += bool(order) and order[0] in rel
        scores["given_ndcg"] += ndcg_at_k(names, rel, k)
        scores["given_mrr"] += reciprocal_rank(names, rel)
        named = sorted(names, key=lambda n: not _query_names(row.request.query, n))  # stable: given order after
        scores["named_ndcg"] += ndcg_at_k(named, rel, k)
        scores["named_mrr"] += reciprocal_rank(named, rel)
        for _ in range(100):
            shuffled = rng.sample(names, len(names))
            scores["random_ndcg"] += ndcg_at_k(shuffled, rel, k) / 100
            scores["random_mrr"] += reciprocal_rank(shuffled, rel) / 100
        for a in rel:
            seen[a] += 1
            hits[a] += a in order[:k]
        if not res.ok or order[0] not in rel:
            mistakes.append({"query": row.request.query, "class": row.query_class, "category": row.category,
                             "relevant": rel, "predicted": order[:k] if res.ok else f"<failed: {res.error}>",
                             "n": len(names)})
    n = max(1, len(rows))
    return {
        "task": "rank",
        "data": str(data),
        "k": k,
        "summary": {"cases": len(rows), "failures": sum(1 for r in results if not r.ok),
                    f"ndcg@{k}": scores["ndcg"] / n, "mrr": scores["mrr"] / n, "top1": scores["top1"] / n,
                    "mean_attributes": sum(len(r.request.names) for r in rows) / n},
        "baselines": {"given order": {f"ndcg@{k}": scores["given_ndcg"] / n, "mrr": scores["given_mrr"] / n},
                      "attribute named in the query": {f"ndcg@{k}": scores["named_ndcg"] / n,
                                                       "mrr": scores["named_mrr"] / n},
                      "random order": {f"ndcg@{k}": scores["random_ndcg"] / n, "mrr": scores["random_mrr"] / n}},
        "attributes": sorted(({"attribute": a, "cases": seen[a], f"in_top{k}": hits[a] / seen[a]} for a in seen),
                             key=lambda x: -x["cases"]),
        "seconds": seconds,
        "seconds_per_product": seconds / n,
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens},
        "mistakes": mistakes[:25],
        "predictions": [r.model_dump() for r in results],
        "cases": [{"query": r.request.query, "class": r.query_class, "category": r.category,
                   "attributes": list(r.request.names), "relevant": r.relevant} for r in rows],
        "provenance": provenance(data_hash=file_hash(data), template=task.template, seed=seed,
                                 template_hash=template_hash(task.template),
                                 shots=task.shots if task.examples else 0, adapter=task.adapter, **prov),
    }


def evaluate_query_attribution(backend, task, data: str | Path, rows: list, progress: bool = True, **prov) -> dict:
    """Phrase -> attribute accuracy of rank's query understanding on hand-labelled searches (``QueryGold``);
    ``backend`` None: the rules alone."""
    import time

    from eval.metrics import score_query_attribution
    from prompts.tasks.query import understand_many
    from prompts.tasks.rank import understanding_of

    stats = RunStats()
    t0 = time.perf_counter()
    reqs = [r.request for r in rows]
    seen = understanding_of(backend, task, reqs, stats) if backend is not None else understand_many(reqs)
    seconds = time.perf_counter() - t0
    score = score_query_attribution([r.phrases for r in rows],
                                    [[(p.start, p.end, p.attribute) for p in u.phrases] for u in seen],
                                    [r.request.query for r in rows])
    mistakes = score.pop("mistakes")
    return {
        "task": "query",
        "data": str(data),
        "summary": {"queries": len(rows), **score},
        "seconds": seconds,
        "seconds_per_product": seconds / max(1, len(rows)),
        "mistakes": mistakes,
        "predictions": [u.as_dict() for u in seen],
        "provenance": provenance(data_hash=file_hash(data), template=task.template, adapter=task.adapter,
                                 rules_only=backend is None, read_unmatched=task.read_unmatched, **prov),
    }
