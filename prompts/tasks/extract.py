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
