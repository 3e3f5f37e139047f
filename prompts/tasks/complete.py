"""complete: predict the attributes a product's category should have but its record lacks.

Given values are never asked for and never overwritten. Each value to fill is constrained to a span of the
product text or one of the attribute's allowed values, or null (abstain). Every prediction carries a confidence
(the probability of its value tokens, from the decoder's log-probabilities) and its source: ``stated`` (the
value is in the text) or ``inferred`` (an allowed value the text does not spell out). Predictions under
``min_confidence`` are turned into abstentions (reported, with their confidence).

Who answers: an adapter trained on extraction (the shipped one, by default) reads each product with the
extraction prompt (``reader``), asked every attribute of the category with the record's known values left out, and
what it finds fills the attributes the record lacks, except a value inside the text of a known value (that part
of the text is already another attribute's). This measured better than an adapter trained on the completion
prompt (docs/benchmarks.md: OA-Mine, one attribute hidden, fill accuracy 0.777 -> 0.851, hidden recall 0.384 ->
0.629, false fills 0.021 -> 0.010, 0.84 s/product against 1.36), which facet no longer ships. Any other model (the
base model, a completion adapter from ``facet train complete``) gets the completion prompt; with ``cross_check`` a
completion adapter's answers are also read by the shipped extraction adapter, and a value both find is kept
(``confirmed``) whatever its confidence.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

from engine.errors import json_object_answer
from engine.types import Completion, JsonSchema, Request
from prompts.examples import Example, ExamplePool
from prompts.render import render_messages
from prompts.spans import candidate_spans, locate
from prompts.tasks.base import (
    Rendered,
    Setup,
    TaskDef,
    as_pool,
    as_schema,
    attribute_examples_option,
    option,
    template_option,
    trained_schema,
)
from prompts.tasks.extract import Extract, clip_product
from schemas import AttributeSchema, AttributeSpec, Product
from schemas.completion import CompletionResult, Filled


def pick_hidden(names, product_id: str, seed: int = 0) -> str | None:
    """The attribute to hide from a product's record: a seeded choice per product (None when there is none)."""
    names = sorted(names)
    return random.Random(f"{seed}:{product_id}").choice(names) if names else None


def split_known(ex: Example, seed: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """A demonstration's gold split into (known, to fill): one attribute hidden, chosen by the seed."""
    hidden = pick_hidden(ex.output, ex.product.id, seed)
    known = {k: v for k, v in ex.output.items() if k != hidden}
    return known, ({hidden: ex.output[hidden]} if hidden else {})


@dataclass(frozen=True)
class Complete:
    attribute_schema: AttributeSchema
    name: str = "complete"
    template: str = "complete.j2"
    examples: ExamplePool | None = None
    shots: int = 3
    min_confidence: float = 0.5
    max_input_chars: int = 2000
    adapter: str | None = None
    cross_check: str | None = None  # the served adapter that reads each product again by extraction (None: off)
    reader: Extract | None = None  # set: each product is read with this extraction task's prompt and constraint

    def bare(self, product: Product) -> Product:
        """The product as extraction reads it: the record's known values left out of the prompt."""
        return product.model_copy(update={"attributes": {}})

    def wanted(self, product: Product) -> tuple[AttributeSpec, ...]:
        given = {k.casefold() for k in product.attributes}
        return tuple(a for a in self.attribute_schema.for_category(product.category) or ()
                     if a.name.casefold() not in given)

    def messages(self, product: Product) -> list:
        if self.reader is not None:
            return self.reader.messages(self.bare(product))
        product, _ = clip_product(product, self.max_input_chars)
        demos = []
        for ex in self.examples.select(product, self.shots) if self.examples else []:
            known, fill = split_known(ex)
            attrs = tuple(a for a in self.attribute_schema.for_category(ex.product.category) or ()
                          if a.name not in known)
            if not attrs:
                continue
            demos.append({"product": ex.product.model_copy(update={"attributes": {}}), "known": known,
                          "attributes": attrs,
                          "answer": json.dumps({a.name: fill.get(a.name) for a in attrs}, ensure_ascii=False,
                                               separators=(",", ":"))})
        return render_messages(self.template, product=product, attributes=self.wanted(product), examples=demos)

    def schema(self, product: Product) -> dict:
        if self.reader is not None:
            return self.reader.schema(self.bare(product))
        spans = candidate_spans(clip_product(product, self.max_input_chars)[0].text())
        props = {}
        for a in self.wanted(product):
            options = list(dict.fromkeys([*spans, *(a.values or ())]))
            props[a.name] = {"enum": [None, *options]}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def build(self, product: Product) -> Request:
        wanted = self.wanted(product)
        if not wanted:
            known = self.attribute_schema.for_category(product.category)
            why = ("every attribute of its category is already given" if known else
                   f"the attribute schema lists no attributes for category {product.category!r}")
            raise ValueError(f"nothing to complete: {why}")
        budget = self.reader.budget(product) if self.reader is not None else min(1024, 24 + 16 * len(wanted))
        return Request(prompt=tuple(self.messages(product)), constraint=JsonSchema(self.schema(product)),
                       max_new_tokens=budget, adapter=self.adapter, want_logprobs=True)

    def parse(self, completion: Completion, product: Product) -> CompletionResult:
        data = json_object_answer(self.name, completion)
        clipped, warnings = clip_product(product, self.max_input_chars)
        text = clipped.text()
        wanted = {a.name: a for a in self.wanted(product)}
        # read by extraction: the text of the known values is theirs (the reader was not told them)
        known = [span for v in product.attributes.values() if (span := locate(v, text)[1])] if self.reader else []
        filled, abstained = [], []
        for name in wanted:
            value = data.get(name)
            conf = value_confidence(completion, name, value)
            if value is None:
                abstained.append(Filled(name=name, value=None, confidence=conf, source="none"))
                continue
            grounding, span = locate(value, text)
            item = Filled(name=name, value=value, confidence=conf,
                          source="stated" if grounding != "none" else "inferred")
            if span and any(span[0] < end and start < span[1] for start, end in known):
                abstained.append(item.model_copy(update={"value": None, "abstained_value": value,
                                                         "withheld": "known_value"}))
            elif conf < self.min_confidence:
                abstained.append(item.model_copy(update={"value": None, "abstained_value": value,
                                                         "withheld": "low_confidence"}))
            else:
                filled.append(item)
        return CompletionResult(id=product.id, category=product.category, given=dict(product.attributes),
                                filled=filled, abstained=abstained, warnings=warnings)


def second_reading(backend, task: Complete, products: list[Product], stats) -> list[dict[str, str]]:
    """What extraction (the ``cross_check`` adapter, asked every attribute of the category, the record's given
    values left out of the prompt as in extraction) finds in each product: name -> value ({} on failure)."""
    from engine.runner import run_task

    reader = Extract(attribute_schema=task.attribute_schema, adapter=task.cross_check,
                     max_input_chars=task.max_input_chars)
    bare = [task.bare(p) for p in products]
    return [{a.name: a.value for a in r.attributes} if r.ok else {} for r in run_task(backend, reader, bare,
                                                                                      stats=stats)]


def cross_checked(result: CompletionResult, found: dict[str, str]) -> CompletionResult:
    """``result`` with the values extraction also found marked ``confirmed``; an abstention whose withheld value
    extraction found is filled."""
    filled = [f.model_copy(update={"confirmed": found.get(f.name) == f.value}) for f in result.filled]
    abstained = []
    for a in result.abstained:
        if a.abstained_value is not None and found.get(a.name) == a.abstained_value:
            filled.append(a.model_copy(update={"value": a.abstained_value, "abstained_value": None,
                                               "withheld": None, "confirmed": True}))
        else:
            abstained.append(a)
    return result.model_copy(update={"filled": filled, "abstained": abstained})


def value_confidence(completion: Completion, name: str, value: str | None) -> float:
    """Probability of the tokens that wrote ``"name":<value>``'s value (product of their probabilities).
    1.0 when the backend gave no log-probabilities."""
    if not completion.logprobs:
        return 1.0
    text = completion.text
    key = json.dumps(name, ensure_ascii=False) + ":"
    start = text.find(key)
    if start < 0:
        return 1.0
    start += len(key)
    end = start + len(json.dumps(value, ensure_ascii=False))
    total, pos = 0.0, 0
    for token, lp in completion.logprobs:
        t0, pos = pos, pos + len(token)
        if pos > start and t0 < end:
            total += lp
        if t0 >= end:
            break
    return math.exp(total)


# -- the registered task ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompleteOptions:
    attributes: object = option(None, "JSON category -> the attributes each category should have (e.g. "
                                "examples/attributes.json); default: those the adapter was trained on", metavar="FILE")
    examples: object = attribute_examples_option()
    shots: int = option(Complete.shots, "demonstrations per product")
    template: str = template_option(Complete.template)
    min_confidence: float = option(Complete.min_confidence, "abstain (null, reported) when a value's probability "
                                   "is below this")
    max_input_chars: int = option(Complete.max_input_chars, "truncate title+description beyond this")
    cross_check: str = option("extract", "with an adapter trained on completion (--adapter PATH from `facet train "
                              "complete`): 'extract' also reads each product with the shipped extraction adapter (the "
                              "same attributes asked) and keeps a value both find even under --min-confidence (one "
                              "extraction pass more per product); 'none': that adapter alone. The shipped adapters "
                              "complete by extraction, so this does not apply to them",
                              choices=("extract", "none"))


def cross_check_adapters(opts: CompleteOptions, model: str | None) -> dict[str, str]:
    """The adapter the cross-check names, to be served beside the task's own: the shipped extraction adapter (for
    the default model; none otherwise, and the cross-check is then skipped)."""
    from engine.adapters import resolve_adapter

    path = resolve_adapter(None, opts.cross_check, model) if opts.cross_check != "none" else None
    return {opts.cross_check: str(path)} if path else {}  # served under the name the requests carry


def build_complete(opts: CompleteOptions, setup: Setup) -> Complete:
    schema = as_schema(opts.attributes)
    if schema is None:
        schema = trained_schema(setup)
    if schema is None:
        raise ValueError("complete needs to know which attributes each category should have: --attributes FILE "
                         "(JSON category -> attribute list, e.g. examples/attributes.json) / attributes=")
    examples = as_pool(opts.examples)
    reader = None
    if reads_by_extraction(setup.adapter):  # asked with the prompt it was trained on
        if opts.template != Complete.template:
            setup.warn(f"--template {opts.template} is not used: the adapter {setup.adapter} was trained on "
                       "extraction and completes with extraction's prompt; pass --adapter none to try a completion "
                       "template on the base model")
        reader = Extract(attribute_schema=schema, examples=examples, shots=opts.shots, adapter=setup.adapter_name,
                         max_input_chars=opts.max_input_chars)
    return Complete(attribute_schema=schema, examples=examples, shots=opts.shots,
                    min_confidence=opts.min_confidence, template=opts.template, max_input_chars=opts.max_input_chars,
                    adapter=setup.adapter_name, reader=reader,
                    # the cross-check goes with a completion adapter, not the base model nor an extraction reader
                    cross_check=opts.cross_check if setup.adapter_name and reader is None and opts.cross_check != "none"
                    else None)


def reads_by_extraction(adapter: str | None) -> bool:
    """Whether an adapter completes by extraction: trained on extraction prompts and not on completion ones (the
    shipped extraction adapter, which is what completion runs with by default). ``adapter`` is a folder, or the name
    `facet serve` serves a shipped adapter under (its folder's name: ``--backend openai --adapter extract``)."""
    from engine.adapters import local_folder, shipped_tasks

    tasks = shipped_tasks(local_folder(adapter)) if adapter else ()
    return "extract" in tasks and "complete" not in tasks


def render_complete(task: Complete, product: Product) -> Rendered:
    return Rendered(task.messages(product), "# output constraint (JSON schema):\n"
                    + json.dumps(task.schema(product), ensure_ascii=False)[:4000])


def run_complete(backend, task: Complete, items: list, stats, state=None) -> list:
    import warnings

    from engine.runner import run_task

    results = run_task(backend, task, items, stats=stats)
    if task.cross_check is None:
        return results
    if task.cross_check not in (getattr(backend, "adapters", None) or {}):
        warnings.warn(f"complete: no cross-check (the backend serves no adapter named {task.cross_check!r}: the "
                      "base model, another model, or a merged adapter); values under min_confidence abstain",
                      stacklevel=2)
        return results
    ok = [i for i, r in enumerate(results) if r.ok]  # error records (nothing to complete) are not read again
    for i, found in zip(ok, second_reading(backend, task, [items[i] for i in ok], stats), strict=True):
        results[i] = cross_checked(results[i], found)
    return results


TASK = TaskDef(
    name="complete", help="predict missing attribute values (given values are never changed)",
    description="For each product, ask for every attribute its category should have (--attributes) that its record "
    "lacks. Values are spans of the product text or an attribute's allowed values, or null; each carries a "
    "confidence from the token probabilities and whether it is stated in the text or inferred; answers under "
    "--min-confidence become abstentions. With the shipped adapters the extraction adapter reads each product for "
    "every attribute of its category and what it finds fills the attributes the record lacks (a value inside the "
    "text of a known value is withheld); the base model (--adapter none) and completion adapters get the "
    "completion prompt.",
    epilog="examples:\n  facet complete examples/to_complete.jsonl --attributes examples/attributes.json\n"
    "  facet complete products.jsonl --attributes attrs.json --examples ../shared/data/oa-mine/train.jsonl -o "
    "filled.jsonl\n  facet eval complete --data ../shared/data/oa-mine/validation.jsonl --examples "
    "../shared/data/oa-mine/train.jsonl", options=CompleteOptions, build=build_complete, render=render_complete,
    run=run_complete, adapters=cross_check_adapters,
)
