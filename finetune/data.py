"""Training examples: rendered through the task's own template and chat formatting.

The prompt tokens are exactly what inference sends (same template, same ``to_prompt_text``);
the answer is serialized exactly as the constrained decoder emits it (compact JSON in schema
order, null when absent). Loss is taken on the answer tokens only.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eval.datasets import GoldProduct
from prompts.spans import locate
from prompts.tasks.extract import Extract, answer_json


@dataclass
class DataReport:
    usable: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.problems[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(where)

    def text(self) -> str:
        lines = [f"{self.usable} usable training records"]
        for kind, n in self.problems.most_common():
            lines.append(f"  {n} x {kind} (e.g. {', '.join(self.examples[kind])})")
        return "\n".join(lines)


def answer_value(values, text: str) -> str:
    """The one gold value to train on: a span of the text first, then the shortest, then the first in order."""
    return min(values, key=lambda v: (text.find(v) < 0, len(v), v))  # v: same answer whatever the hash seed


def extract_pairs(task: Extract, rows: list[GoldProduct], report: DataReport | None = None,
                  sources: dict[str, str] | None = None):
    """(messages, answer) per usable record; problems are counted in ``report``. With demonstrations in the
    prompt, a record never sees itself as one: neither its own title nor, for a changed copy made by
    :func:`augment` (id ``ID~change``), the title of its source, looked up by ID in ``sources``."""
    report = report if report is not None else DataReport()
    sources = sources or {}
    pairs = []
    for r in rows:
        p = r.product
        own = {p.title, sources.get(p.id.split("~", 1)[0], p.title)}
        attrs = task.attributes_for(p)
        output = {}
        for name, vals in r.gold.items():
            if not vals:
                continue
            if attrs is not None and name not in {a.name for a in attrs}:
                report.add("attribute outside the schema (dropped)", f"{p.id}:{name}")
                continue
            value = answer_value(vals, p.text())
            if task.grounded and locate(value, p.text())[0] != "exact":
                report.add("gold value not in the text (kept)", f"{p.id}:{name}={value!r}")
            output[name] = value
        if not output:
            report.add("record without gold values (skipped)", p.id)
            continue
        report.usable += 1
        pairs.append((task.messages(p, own), answer_json(output, attrs)))
    return pairs


def complete_pairs(task, rows: list[GoldProduct], report: DataReport | None = None, copies: int = 1, seed: int = 0,
                   several: bool = False):
    """(messages, answer) for completion: per record, up to ``copies`` different gold attributes hidden in turn
    (drawn with ``seed``; the others given as known), the answer the hidden value and null for every other
    attribute asked (the gold lists only what the text states), serialized as the constrained decoder emits it.
    ``several``: one more pair per record with two or more values, hiding a seeded half of them (at least two) at
    once, as records that lack several attributes are (more filled slots per prompt against the nulls)."""
    from prompts.tasks.complete import pick_hidden

    report = report if report is not None else DataReport()
    pairs = []
    for r in rows:
        p = r.product
        valued = sorted(k for k, v in r.gold.items() if v)
        if not valued:
            report.add("record without gold values (skipped)", p.id)
            continue
        text = p.text()
        first = pick_hidden(valued, p.id, seed)
        rest = [n for n in valued if n != first]
        random.Random(f"{seed}:{p.id}:more").shuffle(rest)
        hide_sets = [(h,) for h in [first, *rest][: max(1, copies)]]
        if several and len(valued) >= 2:
            k = max(2, len(valued) // 2)
            hide_sets.append(tuple(random.Random(f"{seed}:{p.id}:several").sample(valued, k)))
        usable = False
        for hide in hide_sets:
            known = {k: answer_value(r.gold[k], text) for k in valued if k not in hide}
            allowed = task.schema(p.model_copy(update={"attributes": known}))["properties"]  # attribute -> enum
            fill = {}
            for hidden in hide:
                value = answer_value(r.gold[hidden], text)
                if hidden not in allowed:
                    report.add("attribute outside the schema (dropped)", f"{p.id}:{hidden}")
                elif value not in allowed[hidden]["enum"]:
                    report.add("gold value not a span of the text (skipped)", f"{p.id}:{hidden}={value!r}")
                else:
                    fill[hidden] = value
            if not fill:
                continue
            known.update({h: answer_value(r.gold[h], text) for h in hide if h not in fill})  # the rest stay given
            product = p.model_copy(update={"attributes": known})
            answer = json.dumps({a.name: fill.get(a.name) for a in task.wanted(product)}, ensure_ascii=False,
                                separators=(",", ":"))
            pairs.append((task.messages(product), answer))
            usable = True
        report.usable += usable
    return pairs


def classify_pairs(task, rows: list, report: DataReport | None = None, weights: list[float] | None = None,
                   leaf_weight: float = 1.0):
    """(messages, answer) for every taxonomy level of each labelled product (``ClassGold``): the prompt the
    classifier shows at that level, the gold child as the answer (what ``score()`` measures: choice + end).
    ``weights``, when given, gets each pair's loss weight appended: ``leaf_weight`` for the last level of a path
    (the decision the answer is), 1 for the levels above it."""
    report = report if report is not None else DataReport()
    pairs = []
    for r in rows:
        path = tuple(r.path)
        if path not in task.taxonomy:
            report.add("label outside the taxonomy (skipped)", f"{r.product.id}:{' > '.join(path)}")
            continue
        report.usable += 1
        for level in range(len(path)):
            pairs.append((task.messages(r.product, path[:level]), path[level]))
        if weights is not None:
            weights += [1.0] * (len(path) - 1) + [leaf_weight]
    return pairs


def synthetic_classify_examples(folder, n: int, seed: int = 0, report: DataReport | None = None,
                                exclude: frozenset[str] = frozenset({"Uncategorized"}), taxonomy=None) -> list:
    """Labelled products made from Shopify's taxonomy folder, so the classifier sees every branch and not only
    the categories of the labelled data: a top-level category drawn uniformly, one of its leaves, a title of the
    leaf's name with up to two of its allowed attribute values ("Stainless Steel Red Kettles", "Jeans, Denim").
    The gold is the leaf's path (``ClassGold``). ``taxonomy``: the folder's categories.txt, when already loaded."""
    from eval.datasets import read_shopify_attributes
    from prompts.formats import ClassGold
    from schemas import Product
    from schemas.taxonomy import Taxonomy

    report = report if report is not None else DataReport()
    taxonomy = taxonomy if taxonomy is not None else Taxonomy.load(Path(folder) / "categories.txt")
    by_cat, _ = read_shopify_attributes(folder)
    leaves: dict[str, list[tuple[str, ...]]] = {}
    for path in taxonomy.paths:
        if taxonomy.is_leaf(path) and path[0] not in exclude:
            leaves.setdefault(path[0], []).append(path)
    if not leaves:
        raise ValueError(f"{folder}: the taxonomy has no leaves to make examples from")
    rng, roots, out = random.Random(seed), sorted(leaves), []
    for k in range(n):
        path = rng.choice(leaves[rng.choice(roots)])
        values = [rng.choice(a.values) for a in by_cat.get(" > ".join(path), ()) if a.values]
        picked = rng.sample(values, min(len(values), rng.choice((0, 1, 1, 2))))
        leaf = path[-1]
        title = (f"{leaf}, {', '.join(picked)}" if picked and rng.random() < 0.4
                 else " ".join([*picked, leaf]))
        out.append(ClassGold(Product(id=f"synthetic-{k}", title=title), path, f"synthetic-{' > '.join(path)}"))
        report.usable += 1
    return out


def encode(tokenizer, messages, answer: str, max_len: int, weight: float = 1.0) -> dict | None:
    """Token ids and labels (-100 on the prompt); None when the answer would be cut off. A ``weight`` other
    than 1 scales the record's answer loss (``finetune.train.answer_loss``)."""
    from engine.chat import to_prompt_text

    prompt_ids = tokenizer(to_prompt_text(tokenizer, messages), add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False).input_ids
    ids = prompt_ids + answer_ids
    if len(ids) > max_len:
        return None
    record = {"input_ids": ids, "labels": [-100] * len(prompt_ids) + answer_ids}
    return record | {"weight": weight} if weight != 1.0 else record


AUGMENTATIONS = ("reorder", "drop", "lower")


def _consistent(title: str, gold: dict[str, set[str] | None]) -> bool:
    """Every gold value still appears verbatim in the (changed) title."""
    return all(any(v in title for v in vals) for vals in gold.values() if vals)


def _reorder(title, gold, rng):
    """Shuffle the comma-separated parts after the first (brand and product name stay in front)."""
    parts = [s.strip() for s in title.split(",")]
    if len(parts) < 3:
        return None
    rest = parts[1:]
    rng.shuffle(rest)
    if rest == parts[1:]:
        rest = rest[1:] + rest[:1]
    return ", ".join([parts[0], *rest]), gold


def _drop(title, gold, rng):
    """Delete one attribute's value from the title; its gold becomes absent (the model must answer null)."""
    names = [n for n, vals in gold.items() if vals and len(gold) > 1]
    rng.shuffle(names)
    for name in names:
        value = max(gold[name], key=len)
        if title.count(value) != 1:
            continue
        new = " ".join(title.replace(value, " ").split())
        new = new.replace(" ,", ",").replace(",,", ",").strip(" ,-")
        rest = {n: v for n, v in gold.items() if n != name}
        if len(new) >= 8 and not any(value in v or v in value for vals in rest.values() if vals for v in vals):
            return new, rest
    return None


def _lower(title, gold, rng):
    """Lower-case title and values alike: the answer must copy the text's casing, whatever it is."""
    return title.lower(), {n: ({v.lower() for v in vals} if vals else vals) for n, vals in gold.items()}


def augment(rows: list[GoldProduct], copies: int, seed: int = 0) -> list[GoldProduct]:
    """Up to ``copies`` changed variants per record (different augmentations, chosen at random), each
    kept only when every gold value is still a span of the new title. Titles only: descriptions are kept."""
    import random

    rng = random.Random(seed)
    out = []
    ops = {"reorder": _reorder, "drop": _drop, "lower": _lower}
    for r in rows:
        names = list(AUGMENTATIONS)
        rng.shuffle(names)
        made = 0
        for name in names:
            if made >= copies:
                break
            got = ops[name](r.product.title, r.gold, rng)
            if got is None or got[0] == r.product.title or not _consistent(*got):
                continue
            title, gold = got
            product = r.product.model_copy(update={"title": title, "id": f"{r.product.id}~{name}"})
            out.append(GoldProduct(product=product, gold=gold))
            made += 1
    return out


def synthetic_rank_examples(folder, n: int, seed: int = 0, report: DataReport | None = None) -> list:
    """Rank demonstrations made from a taxonomy with attributes (Shopify's folder): a query is one allowed value
    of one attribute of a category, put before or after the category's name ("walnut dining tables"); the
    answer is that attribute. Queries whose words also spell out another attribute's value are dropped (their
    answer would be ambiguous). Categories with fewer than 3 attributes are not used."""
    from eval.datasets import query_labels, read_shopify_attributes
    from prompts.tasks.rank import RankExample
    from schemas import Product
    from schemas.ranking import RankRequest

    report = report if report is not None else DataReport()
    by_cat, _ = read_shopify_attributes(folder)
    cats = sorted((c, a) for c, a in by_cat.items() if len(a) >= 3 and any(x.values for x in a))
    if not cats:
        raise ValueError(f"{folder}: no category with 3 or more attributes that have values")
    rng = random.Random(seed)
    out, tries = [], 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        cat, attrs = rng.choice(cats)
        attr = rng.choice([a for a in attrs if a.values])
        value, leaf = rng.choice(attr.values), cat.split(" > ")[-1]
        query = (f"{value} {leaf}" if rng.random() < 0.7 else f"{leaf} {value}").lower()
        if set(query_labels(query, attrs)) != {attr.name}:
            report.add("query names more than one attribute (skipped)", query)
            continue
        product = Product(id=f"synthetic-{len(out)}", title=leaf, category=leaf)
        out.append(RankExample(RankRequest(product=product, names=tuple(a.name for a in attrs), query=query),
                               attr.name))
        report.usable += 1
    return out


def rank_pairs(task, examples: list, report: DataReport | None = None):
    """(messages, answer): the prompt the ranker scores names under ("which matters most?"), the answer name."""
    report = report if report is not None else DataReport()
    pairs = []
    for ex in examples:
        if ex.answer not in ex.request.names:
            report.add("answer is not one of the record's attributes (skipped)", ex.request.product.id)
            continue
        pairs.append((task.messages(ex.request), ex.answer))
    return pairs
