"""extract: product text -> attribute values (schema-guided or open), grounded in the text."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from engine.errors import ParseError, json_object_answer
from engine.types import Completion, JsonSchema, Request
from prompts.examples import ExamplePool
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
from schemas import AttributeSchema, AttributeSpec, AttributeValue, ExtractionResult, Product

OPEN_MAX_ATTRIBUTES = 12
OPEN_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9 _-]{0,39}$"  # attribute names in open mode


def answer_json(output: dict[str, str | None], attributes: tuple[AttributeSpec, ...] | None) -> str:
    """Serialize an answer exactly as the constrained decoder emits it (compact, schema order)."""
    if attributes:
        obj = {a.name: output.get(a.name) for a in attributes}
    else:
        obj = {k: v for k, v in output.items() if v is not None}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def clip_product(product: Product, max_chars: int) -> tuple[Product, list[str]]:
    """Keep title + description within ``max_chars`` (title first); say so when something was cut."""
    warnings = []
    title, desc = product.title, product.description
    if len(title) > max_chars:
        warnings.append(f"title truncated from {len(title)} to {max_chars} characters")
        title = title[:max_chars]
    room = max(0, max_chars - len(title))
    if desc and len(desc) > room:
        warnings.append(f"description truncated from {len(desc)} to {room} characters")
        desc = desc[:room] or None
    if not warnings:
        return product, []
    return product.model_copy(update={"title": title, "description": desc}), warnings


@dataclass(frozen=True)
class Extract:
    name: str = "extract"
    template: str = "extract.j2"
    attribute_schema: AttributeSchema | None = None
    examples: ExamplePool | None = None
    shots: int = 3
    grounded: bool = True  # values may only be spans of the product text
    max_input_chars: int = 2000
    max_new_tokens: int | None = None
    adapter: str | None = None
    also_open: bool = False  # with a list: also ask the open prompt, and take what it finds for attributes left null

    # -- inputs -----------------------------------------------------------------------------
    def attributes_for(self, product: Product) -> tuple[AttributeSpec, ...] | None:
        return self.attribute_schema.for_category(product.category) if self.attribute_schema else None

    def clip(self, product: Product) -> tuple[Product, list[str]]:
        return clip_product(product, self.max_input_chars)

    def messages(self, product: Product, exclude_titles: Collection[str] = ()):
        product, _ = self.clip(product)
        attrs = self.attributes_for(product)
        demos = []
        for ex in self.examples.select(product, self.shots, exclude_titles) if self.examples else []:
            ex_attrs = self.attributes_for(ex.product) if self.attribute_schema else None
            demos.append(
                {"product": ex.product, "attributes": ex_attrs, "answer": answer_json(ex.output, ex_attrs)}
            )
        return render_messages(self.template, product=product, attributes=attrs, examples=demos)

    def schema(self, product: Product) -> dict:
        product, _ = self.clip(product)
        attrs = self.attributes_for(product)
        spans = candidate_spans(product.text()) if self.grounded else None
        value = {"enum": [None, *spans]} if spans is not None else {
            "anyOf": [{"type": "null"}, {"type": "string", "minLength": 1, "maxLength": 80}]
        }
        if attrs:
            props = {}
            for a in attrs:
                if a.values:
                    props[a.name] = {"enum": [None, *a.values]}
                else:
                    props[a.name] = value
            return {
                "type": "object",
                "properties": props,
                "required": [a.name for a in attrs],
                "additionalProperties": False,
            }
        return {
            "type": "object",
            "patternProperties": {OPEN_NAME_PATTERN: value},
            "additionalProperties": False,
            "maxProperties": OPEN_MAX_ATTRIBUTES,
        }

    def budget(self, product: Product) -> int:
        if self.max_new_tokens:
            return self.max_new_tokens
        attrs = self.attributes_for(product)
        n = len(attrs) if attrs else OPEN_MAX_ATTRIBUTES
        return min(1024, 24 + 16 * n)

    def build(self, product: Product) -> Request:
        return Request(
            prompt=tuple(self.messages(product)),
            constraint=JsonSchema(self.schema(product)),
            max_new_tokens=self.budget(product),
            adapter=self.adapter,
        )

    # -- output -----------------------------------------------------------------------------
    def parse(self, completion: Completion, product: Product) -> ExtractionResult:
        data = json_object_answer(self.name, completion)
        clipped, warnings = self.clip(product)
        attrs = self.attributes_for(product)
        allowed = {a.name: a for a in attrs} if attrs else None
        text = clipped.text()
        values, missing = [], []
        for name, value in data.items():
            if allowed is not None and name not in allowed:
                raise ParseError(self.name, completion.text, f"attribute {name!r} was not asked for")
            if value is None or (isinstance(value, str) and value.strip().casefold() in ("", "n/a", "null")):
                missing.append(name)
                continue
            if not isinstance(value, str):
                raise ParseError(self.name, completion.text, f"value of {name!r} is not a string")
            spec = allowed.get(name) if allowed else None
            if spec is not None and spec.values and value not in spec.values:
                raise ParseError(self.name, completion.text, f"{value!r} is not an allowed value of {name!r}")
            grounding, span = locate(value, text)
            values.append(AttributeValue(name=name, value=value.strip(), grounding=grounding, span=span))
        if allowed is not None:
            missing += [n for n in allowed if n not in data and n not in missing]
        return ExtractionResult(
            id=product.id, category=product.category, attributes=values, missing=missing, warnings=warnings
        )


# -- the registered task ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractOptions:
    attributes: object = option(None, "JSON category -> attribute list to ask for (schema-guided). Without it: open "
                                "extraction (the adapter's trained list when it has one)", metavar="FILE")
    examples: object = attribute_examples_option()
    shots: int = option(Extract.shots, "demonstrations per product, chosen by similarity")
    template: str = template_option(Extract.template)
    free: bool = option(False, "let values be any string (default: values are constrained to spans of the product "
                        "text)")
    max_input_chars: int = option(Extract.max_input_chars, "truncate title+description beyond this")
    max_new_tokens: int | None = option(None, "answer budget (default: by attribute count)", type=int)
    also_open: bool = option(False, "with an attribute list: also read each product with the open prompt and take "
                             "its value for a listed attribute the list's answer left null (a second reading: "
                             "measured +0.007 micro-F1, +0.021 macro-F1 on OA-Mine with the shipped adapter, for 1.8x "
                             "the time)")
    # the normalization step after extraction (--spec): see prompts/tasks/normalize.py
    spec: object = option(None, "also normalize the values found by these rules (JSON spec or WDC-PAVE "
                          "descriptions.csv): each record gets `normalized`", metavar="FILE")
    aliases: object = option(None, "with --spec: JSON {alias: canonical attribute name}", metavar="FILE")
    keep_unknown: bool = option(False, "with --spec: keep attributes no canonical name takes")


def build_extract(opts: ExtractOptions, setup: Setup) -> Extract:
    from prompts.render import prompt_mismatch

    schema = as_schema(opts.attributes)
    if schema is None:
        schema = trained_schema(setup)  # an adapter is asked the attributes it was trained on
    examples = as_pool(opts.examples)
    if setup.adapter and (warning := prompt_mismatch(setup.adapter, examples is not None, opts.template)):
        setup.warn(warning)
    return Extract(template=opts.template, attribute_schema=schema, examples=examples, shots=opts.shots,
                   grounded=not opts.free, max_input_chars=opts.max_input_chars, max_new_tokens=opts.max_new_tokens,
                   adapter=setup.adapter_name, also_open=opts.also_open)


def normalize_step(opts: ExtractOptions, setup: Setup):
    """The normalization after extraction that ``spec`` asks for (None without it). The base model decides values
    only (names stay the ones the extractor was asked for, unless an alias or spelling maps them); demonstrations
    come only from a WDC-PAVE file with its ``_normalized`` twin beside it (the extractor's own examples file)."""
    from pathlib import Path

    from prompts.formats import normalized_twin
    from prompts.tasks.normalize import NormalizeOptions, build_normalize

    if not opts.spec:
        return None
    if setup.adapter and setup.merged:
        raise ValueError("--spec normalizes with the base model, which a merged adapter replaces: drop "
                         "--merge-adapter (the adapter is then served beside the base model)")
    demos = opts.examples if isinstance(opts.examples, (str, Path)) and normalized_twin(opts.examples).is_file() \
        else None
    task = build_normalize(NormalizeOptions(spec=opts.spec, aliases=opts.aliases, keep_unknown=opts.keep_unknown,
                                            examples=demos, shots=opts.shots, ask_names=False), Setup())
    setup.note(f"the values found are normalized by {opts.spec} ({len(task.examples)} normalization "
               "demonstrations)")
    return task


def run_extract(backend, task: Extract, items: list, stats, normalize=None) -> list:
    from engine.runner import run_task
    from prompts.tasks.normalize import normalize_found

    results = run_task(backend, task, items, stats=stats)
    if task.also_open and task.attribute_schema is not None:
        results = with_open_reading(backend, task, items, results, stats)
    if normalize is None:
        return results
    return list(normalize_found(backend, normalize, items, results, len(items) or 1, stats))


def with_open_reading(backend, task: Extract, products: list, results: list, stats) -> list:
    """``results`` (answers to the listed prompt) with each attribute they left null filled from the open prompt's
    answer for the same product, when it names that attribute (exactly) and found a value."""
    from dataclasses import replace

    from engine.runner import run_task

    opened = run_task(backend, replace(task, attribute_schema=None, also_open=False), products, stats=stats)
    out = []
    for r, o in zip(results, opened, strict=True):
        if r.ok and o.ok and r.missing:
            missing = set(r.missing)
            extra = [a for a in o.attributes if a.name in missing]
            taken = {a.name for a in extra}
            r = r.model_copy(update={"attributes": [*r.attributes, *extra],
                                     "missing": [n for n in r.missing if n not in taken]})
        out.append(r)
    return out


def render_extract(task: Extract, product: Product) -> Rendered:
    return Rendered(task.messages(product), "# output constraint (JSON schema):\n"
                    + json.dumps(task.schema(product), ensure_ascii=False)[:4000])


TASK = TaskDef(
    name="extract", help="extract attributes from a JSONL file of products",
    description="Extract attribute values from each product's title and description: open (the model names what "
    "the text states) or schema-guided (--attributes: the attributes each category should have); values are "
    "constrained to spans of the text, so every value is grounded.",
    epilog="examples:\n  facet extract products.jsonl -o attrs.jsonl                 # the shipped adapter, open "
    "attributes\n  facet extract products.jsonl -o attrs.jsonl --resume        # continue a killed run\n"
    "  facet extract products.jsonl --attributes attrs.json --examples demos.jsonl -o out.jsonl\n"
    "  facet extract offers.jsonl --spec ../shared/data/wdc-pave/descriptions.csv -o out.jsonl   # + normalized\n"
    "  facet extract products.jsonl --backend vllm --merge-adapter -o out.jsonl\n"
    "  facet extract big/ -o out/ --ray auto --workers 8           # a Ray cluster, resumable partitions",
    options=ExtractOptions,
    build=build_extract, run=run_extract, render=render_extract,
    prepare=lambda opts, items, setup: (normalize_step(opts, setup), []),
)
