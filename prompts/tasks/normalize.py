"""normalize: attribute names and values -> canonical form. Rules first, the model only for what rules cannot do.

Names: exact -> alias file -> case/spacing-insensitive -> close spelling (difflib) -> the model, choosing among
the category's canonical names or "other" (dropped as irrelevant to the category). Two names mapping to one
canonical name are merged (first value kept).

Values, by the attribute's rule (schemas.normalization.NormRule):
- unit: quantity parsed (mixed fractions, inch/foot marks, ranges -> the larger end) and converted with pint;
- number: the count in the value ("1,000/Box" -> 1000, "six" -> 6, "10K" -> 10000);
- delete_marks / substring / upper / lower: string wrangling;
- expand: the spec's replacements (abbreviations -> full names, unit symbols -> unit names);
- choose: an allowed value equal to the value (ignoring case) -> colour names resolved with webcolors when the
  options are colours -> the answer of the demonstration whose value shares most words with this one -> the
  model, scoring every allowed value (few-shot with demonstrations) or decoding under a choice constraint.
Every change is recorded (before, after, and which rule or the model made it).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from itertools import islice

from engine.errors import ParseError
from engine.runner import RunStats, can_score, run_task, score_options
from engine.types import Choice, Completion, Request, TokenizingBackend
from prompts.formats import load_examples  # noqa: F401  (demonstration files; re-exported)
from prompts.render import render_messages
from prompts.rules import (  # noqa: F401  (the value rules: units, numbers, expansions, colours)
    choose_colour,
    convert_unit,
    expand,
    is_colour_options,
    to_number,
)
from prompts.tasks.base import Rendered, Setup, TaskDef, option
from schemas import ErrorRecord, ExtractionResult, Product
from schemas.normalization import Change, NormalizationResult, NormalizationSpec, NormRule

OTHER = "other"


# -- the task ------------------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass(frozen=True)
class Question:
    """One choice the model has to make (kind 'name' or 'value')."""

    product: Product
    kind: str
    attribute: str
    value: str
    options: tuple[str, ...]
    instruction: str | None = None

    @property
    def id(self) -> str:
        return self.product.id


@dataclass(frozen=True)
class Normalize:
    spec: NormalizationSpec
    name: str = "normalize"
    template: str = "normalize.j2"
    examples: tuple[dict, ...] = ()  # {title, category, attribute, value, answer}
    shots: int = 3
    fuzzy_cutoff: float = 0.85
    per_token: bool = True  # rank scored answers by mean (not summed) token log-probability
    drop_unknown: bool = True  # names the model calls "other" are dropped (irrelevant to the category)
    ask_names: bool = True  # False: a name no alias or spelling maps is kept as written (after extraction, the
    # names are the ones the extractor was asked for), and the model decides values only
    adapter: str | None = None

    def messages(self, q: Question) -> list:
        demos = self.demos(q) if q.kind == "value" else []
        return render_messages(self.template, product=q.product, kind=q.kind, attribute=q.attribute, value=q.value,
                               instruction=q.instruction or "", options=list(q.options),
                               examples=[{"product": Product(id="demo", title=d.get("title", ""),
                                                             category=d.get("category")),
                                          "attribute": d["attribute"], "value": d["value"], "answer": d["answer"]}
                                         for d in demos])

    def demos(self, q: Question) -> list[dict]:
        """The ``shots`` demonstrations of the same attribute (never from the same product) whose title and
        value share the most words with this one's."""
        mine = _words(f"{q.product.title} {q.value}")
        pool = [d for d in self.examples if d.get("attribute") == q.attribute and d.get("answer") in q.options
                and d.get("title") != q.product.title]
        pool.sort(key=lambda d: -len(mine & _words(f"{d.get('title', '')} {d.get('value', '')}")))
        return pool[: self.shots]

    def nearest_example(self, q: Question) -> str | None:
        """The answer of the demonstration (same attribute and category, another product) whose raw value shares
        the most words with this value, ties broken by title overlap; None when no value shares a word."""
        value, title = _words(q.value), _words(q.product.title)
        best, key = None, (0, 0)
        for d in self.examples:
            if d.get("attribute") != q.attribute or d.get("answer") not in q.options or d.get("title") == q.product.title:
                continue
            if q.product.category and d.get("category") not in (None, q.product.category):
                continue
            k = (len(value & _words(str(d.get("value", "")))), len(title & _words(d.get("title", ""))))
            if k[0] and k > key:
                best, key = d["answer"], k
        return best

    def build(self, q: Question) -> Request:
        return Request(prompt=tuple(self.messages(q)), constraint=Choice(q.options), max_new_tokens=48,
                       adapter=self.adapter)

    def parse(self, completion: Completion, q: Question) -> str:
        answer = completion.text.strip()
        if answer not in q.options:
            raise ParseError(self.name, completion.text, f"{answer!r} is not one of the allowed answers")
        return answer

    # -- rules ---------------------------------------------------------------------------------
    def canonical_name(self, name: str, category: str | None) -> tuple[str | None, str]:
        """(canonical name or None when the model must decide, how)."""
        names = self.spec.names(category)
        if not names or name in names:
            return name, "none"
        aliases = {k.casefold(): v for k, v in self.spec.aliases.items()}
        if name.casefold() in aliases:
            return aliases[name.casefold()], "alias"
        folded = {re.sub(r"[\W_]+", "", n.casefold()): n for n in names}
        key = re.sub(r"[\W_]+", "", name.casefold())
        if key in folded:
            return folded[key], "rule:spelling"
        close = difflib.get_close_matches(key, list(folded), n=1, cutoff=self.fuzzy_cutoff)
        if close:
            return folded[close[0]], "rule:spelling"
        return None, "model"

    def rule_value(self, rule: NormRule | None, value: str) -> tuple[str | None, str]:
        """(normalized value or None when the model must decide, how)."""
        if rule is None or rule.op == "keep":
            return value, "none"
        op = rule.op
        if op == "unit":
            out = convert_unit(value, rule)
            return (out, "rule:unit") if out is not None else (value, "none")
        if op == "number":
            out = to_number(value, rule.decimals)
            return (out, "rule:number") if out is not None else (value, "none")
        if op == "delete_marks":
            return re.sub(r"[^A-Za-z0-9]", "", value), "rule:delete_marks"
        if op == "substring":
            digits = re.sub(r"\D", "", value) or value
            return digits[rule.start : rule.end], "rule:substring"
        if op == "upper":
            return value.upper(), "rule:upper"
        if op == "lower":
            return value.lower(), "rule:lower"
        if op == "expand":
            return expand(value, rule.replacements), "rule:expand"
        # choose
        for o in rule.options:
            if o.casefold() == value.strip().casefold():
                return o, "rule:choose"
        if is_colour_options(rule.options):
            out = choose_colour(value, rule.options)
            if out is not None:
                return out, "colour"
        return None, "model"


def _as_text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def normalize_many(backend, task: Normalize, products: list[Product], stats: RunStats | None = None,
                   retries: int = 1) -> list[NormalizationResult | ErrorRecord]:
    """Normalize each product's ``attributes``; results in input order, an ErrorRecord per unusable product."""
    stats = stats if stats is not None else RunStats()
    results: list[NormalizationResult | ErrorRecord | None] = [None] * len(products)
    pending: list[tuple[int, list[tuple[str, str]]]] = []
    for i, p in enumerate(products):
        if not p.attributes:
            results[i] = ErrorRecord(id=p.id, task=task.name, error="the product has no attributes to normalize; "
                                     "give them as {\"attributes\": {\"name\": \"value\", ...}}")
            continue
        bad = [k for k, v in p.attributes.items() if _as_text(v) is None]
        if bad:
            results[i] = ErrorRecord(id=p.id, task=task.name, error=f"attribute value(s) of {bad} are not text or "
                                     f"numbers; give every value as a string")
            continue
        results[i] = NormalizationResult(id=p.id, category=p.category)
        pending.append((i, [(k, _as_text(v)) for k, v in p.attributes.items()]))

    def ask(questions: list[Question]) -> list[str | ErrorRecord]:
        if not questions or backend is None:
            return [ErrorRecord(id=q.id, task=task.name, error="no model to decide") for q in questions]
        if can_score(backend):
            # every allowed answer scored (sum of its token log-probabilities), the best one taken: on the
            # small model this beats decoding, which mostly returns the first option offered
            scores = score_options(backend, [(tuple(task.messages(q)), q.options) for q in questions], task.adapter,
                                   stats)
            tok = backend.tokenizer if isinstance(backend, TokenizingBackend) else None
            if task.per_token and tok:  # mean log-probability per token: long options are not penalised for length
                scores = [[lp / (len(tok(o, add_special_tokens=False).input_ids) + 1) for lp, o in zip(lps, q.options, strict=True)]
                          for lps, q in zip(scores, questions, strict=True)]
            return [max(zip(q.options, lps, strict=True), key=lambda x: x[1])[0] for q, lps in zip(questions, scores, strict=True)]
        level = RunStats()
        out = run_task(backend, task, questions, retries=retries, stats=level)
        stats.merge(level)
        return out

    # names
    named: dict[int, list[tuple[str, str, str, str]]] = {}  # i -> [(given, canonical, value, how)]
    questions, where = [], []
    for i, items in pending:
        p = products[i]
        named[i] = []
        for k, v in items:
            canon, how = task.canonical_name(k, p.category)
            if canon is None and not task.ask_names:
                canon, how = k, "none"
            if canon is None:
                where.append((i, len(named[i])))
                questions.append(Question(p, "name", k, v, (*task.spec.names(p.category), OTHER)))
            named[i].append((k, canon or k, v, how))
    for (i, j), ans in zip(where, ask(questions), strict=True):
        k, _, v, _ = named[i][j]
        if isinstance(ans, ErrorRecord):
            results[i].warnings.append(f"attribute {k!r} is not in the vocabulary and the model could not map it "
                                       f"({ans.error}); kept as given")
            named[i][j] = (k, k, v, "none")
        else:
            named[i][j] = (k, ans, v, "model")
    # values
    final: dict[int, dict[str, str]] = {}
    questions, where = [], []
    for i, _items in pending:
        p, res = products[i], results[i]
        final[i] = {}
        for k, canon, v, how in named[i]:
            if canon == OTHER:
                if task.drop_unknown:
                    res.changes.append(Change(attribute=k, field="dropped", before=v, after=None, by=how))
                    continue
                canon = k
            if canon != k:
                res.changes.append(Change(attribute=canon, field="name", before=k, after=canon, by=how))
            if canon in final[i]:
                res.changes.append(Change(attribute=canon, field="merged", before=v, after=final[i][canon], by="rule:merge"))
                continue
            rule = task.spec.rule_for(p.category, canon)
            out, vhow = task.rule_value(rule, v)
            if out is None and task.examples:
                out, vhow = task.nearest_example(Question(p, "value", canon, v, tuple(rule.options))), "examples"
            if out is None:
                where.append((i, canon, v))
                questions.append(Question(p, "value", canon, v, tuple(rule.options), rule.instruction))
                final[i][canon] = v
                continue
            final[i][canon] = out
            if out != v:
                res.changes.append(Change(attribute=canon, field="value", before=v, after=out, by=vhow))
    for (i, canon, v), ans in zip(where, ask(questions), strict=True):
        if isinstance(ans, ErrorRecord):
            results[i].warnings.append(f"{canon}: could not map {v!r} onto the allowed values ({ans.error}); kept as given")
            continue
        final[i][canon] = ans
        if ans != v:
            results[i].changes.append(Change(attribute=canon, field="value", before=v, after=ans, by="model"))
    for i, _ in pending:
        results[i].attributes = final[i]
    done = [r for r in results if r is not None]
    stats.done += sum(1 for r in done if r.ok)
    stats.failed += sum(1 for r in done if not r.ok)
    return done  # type: ignore[return-value]


def normalize_found(backend, task: Normalize, products, results, batch_size: int = 16,
                    stats: RunStats | None = None):
    """Extraction, then normalization, as a catalogue runs them: each extraction result (in the order of
    ``products``, which ``results`` follows) comes out with the values it found normalized in ``normalized``.
    A product whose normalization fails keeps its extraction, with the reason in ``warnings``. ``stats`` gains
    the normalization's calls and tokens; its products were counted done or failed by the extraction."""
    pairs = iter(zip(products, results, strict=True))
    while chunk := list(islice(pairs, batch_size)):
        todo = [i for i, (_, r) in enumerate(chunk) if isinstance(r, ExtractionResult) and r.attributes]
        level = RunStats()
        normed = dict(zip(todo, normalize_many(
            backend, task, [chunk[i][0].model_copy(update={"attributes": chunk[i][1].as_dict()}) for i in todo],
            stats=level), strict=True))
        if stats is not None:
            stats.merge(level)
        for i, (_, r) in enumerate(chunk):
            n = normed.get(i)
            if n is None:
                yield r
            elif n.ok:
                yield r.model_copy(update={"normalized": n})
            else:
                yield r.model_copy(update={"warnings": [*r.warnings, f"not normalized: {n.error}"]})


# -- the registered task ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NormalizeOptions:
    spec: object = option(None, "rules per attribute: JSON (see schemas/normalization.py, e.g. "
                          "examples/normalization.json) or a WDC-PAVE descriptions.csv", metavar="FILE")
    aliases: object = option(None, "JSON {alias: canonical attribute name}, added to the spec's", metavar="FILE")
    keep_unknown: bool = option(False, "keep attributes the model maps to no canonical name (default: drop them, "
                                "recorded)")
    examples: object = option(None, "demonstrations: JSONL {title, category, attribute, value, answer}, or WDC-PAVE "
                              "train.jsonl with train_normalized.jsonl beside it", metavar="FILE")
    shots: int = option(Normalize.shots, "demonstrations per model question")
    ask_names: bool = option(Normalize.ask_names, "let the model map names no rule maps", cli=False)


def build_normalize(opts: NormalizeOptions, setup: Setup) -> Normalize:
    import json
    from pathlib import Path

    if opts.spec is None:
        raise ValueError("normalize needs the rules: --spec FILE (JSON spec, e.g. examples/normalization.json, or a "
                         "WDC-PAVE descriptions.csv) / spec=")
    spec = opts.spec if isinstance(opts.spec, NormalizationSpec) else NormalizationSpec.load(opts.spec)
    if opts.aliases:
        extra = opts.aliases if isinstance(opts.aliases, dict) else json.loads(Path(opts.aliases).read_text())
        spec = spec.model_copy(update={"aliases": {**spec.aliases, **extra}})
    examples = load_examples(opts.examples) if isinstance(opts.examples, (str, Path)) else opts.examples
    return Normalize(spec=spec, examples=tuple(examples or ()), shots=opts.shots, drop_unknown=not opts.keep_unknown,
                     adapter=setup.adapter_name, ask_names=opts.ask_names)


def first_question(task: Normalize, product: Product) -> Question | None:
    """The first question the model would be asked for this product (a name, else a value), or None."""
    for k, v in product.attributes.items():
        canon, _ = task.canonical_name(k, product.category)
        if canon is None:
            return Question(product, "name", k, v, (*task.spec.names(product.category), OTHER))
        rule = task.spec.rule_for(product.category, canon)
        if task.rule_value(rule, v)[0] is None:
            return Question(product, "value", canon, v, tuple(rule.options), rule.instruction)
    return None


def render_normalize(task: Normalize, product: Product) -> Rendered:
    q = first_question(task, product)
    if q is None:
        return Rendered(None, note="rules settle every attribute of this record; no prompt")
    return Rendered(task.messages(q), "# output constraint (one of):\n" + " | ".join(q.options))


TASK = TaskDef(
    name="normalize", help="canonical attribute names and values (units, colours, allowed values)",
    description="Normalize each product's `attributes` ({name: value}) by a spec: names onto a canonical vocabulary "
    "(aliases, spelling, then the model), values by rule (pint unit conversion, numbers, string wrangling, "
    "expansions, webcolors colour names), and the model only where a value must be mapped onto allowed values no "
    "rule settles. Every change is recorded with what made it.",
    epilog="examples:\n  facet normalize examples/to_normalize.jsonl --spec examples/normalization.json\n"
    "  facet normalize offers.jsonl --spec ../shared/data/wdc-pave/descriptions.csv -o norm.jsonl\n"
    "  facet eval normalize --data ../shared/data/wdc-pave/train.jsonl",
    options=NormalizeOptions, build=build_normalize, render=render_normalize, batch="batch",
    run=lambda backend, task, items, stats, state=None: normalize_many(backend, task, items, stats=stats),
)
