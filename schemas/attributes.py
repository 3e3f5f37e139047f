"""Attribute schemas: which attributes to ask for, per category."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AttributeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str | None = None
    values: tuple[str, ...] | None = Field(default=None, description="Allowed values, if enumerated.")


class AttributeSchema(BaseModel):
    """category -> attribute list. The key ``"*"`` applies to categories not listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: dict[str, tuple[AttributeSpec, ...]]

    @field_validator("categories")
    @classmethod
    def _non_empty(cls, v):
        for cat, specs in v.items():
            if not specs:
                raise ValueError(f"category {cat!r} has an empty attribute list")
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"category {cat!r} lists an attribute twice: {names}")
        return v

    def for_category(self, category: str | None) -> tuple[AttributeSpec, ...] | None:
        if category is not None and category in self.categories:
            return self.categories[category]
        if category is not None:
            folded = {k.casefold(): k for k in self.categories}
            if category.casefold() in folded:
                return self.categories[folded[category.casefold()]]
        return self.categories.get("*")

    @classmethod
    def from_mapping(cls, data: dict) -> AttributeSchema:
        cats = {}
        for cat, attrs in data.items():
            if isinstance(attrs, dict):
                attrs = [{"name": k, **(v if isinstance(v, dict) else {"description": v})} for k, v in attrs.items()]
            cats[cat] = tuple(AttributeSpec(name=a) if isinstance(a, str) else AttributeSpec(**a) for a in attrs)
        return cls(categories=cats)


def load_attribute_schema(path: str | Path) -> AttributeSchema:
    """Load an attribute schema from JSON.

    Accepted shapes: ``{"Coffee": ["Brand", "Flavor"]}``,
    ``{"Coffee": {"Brand": "the maker", "Roast": {"values": ["light", "dark"]}}}``, or
    ``{"Coffee": [{"name": "Brand", "description": ...}]}``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"attribute schema file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"attribute schema {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"attribute schema {path} must be a JSON object of category -> attributes")
    try:
        return AttributeSchema.from_mapping(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"attribute schema {path}: {exc}") from None
