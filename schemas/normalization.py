"""Normalization specs (what canonical form each attribute takes) and normalization results.

A spec is a JSON file::

    {"aliases": {"colour": "Color", "Farbe": "Color"},
     "rules": [
       {"attribute": "Width", "category": "Office Products", "op": "unit", "unit": "cm", "default_unit": "inch",
        "decimals": 1},
       {"attribute": "Color", "op": "choose", "options": ["Black", "White", "Blue", "Assorted/Others"]},
       {"attribute": "Capacity", "op": "expand", "replacements": {"GB": "Gigabytes", "TB": "Terabytes"}},
       {"attribute": "Part Number", "op": "delete_marks"}]}

or the WDC-PAVE ``descriptions.csv`` (its normalization parameters and instructions are turned into
rules: units and decimals from the instruction text, options from "EXACTLY ONE of the following",
replacements from the pseudo code). A rule without ``category`` (or ``"*"``) applies to every category.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Op = Literal["keep", "unit", "number", "delete_marks", "substring", "upper", "lower", "expand", "choose"]
OPERATIONS = {  # op -> the operation family that normalization results are reported by
    "keep": "none", "unit": "unit conversion", "number": "string wrangling", "delete_marks": "string wrangling",
    "substring": "string wrangling", "upper": "string wrangling", "lower": "string wrangling",
    "expand": "name expansion", "choose": "generalisation",
}


class NormRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attribute: str
    category: str = "*"
    op: Op = "keep"
    unit: str | None = Field(default=None, description="unit: target unit (a pint unit name, e.g. cm, kg, g)")
    default_unit: str | None = Field(default=None, description="unit: unit assumed when the value states none")
    decimals: int | None = Field(default=None, description="unit/number: round to this many decimals (0: integer)")
    start: int = Field(default=0, description="substring: first character kept (0-based)")
    end: int | None = Field(default=None, description="substring: one past the last character kept")
    options: list[str] = Field(default_factory=list, description="choose: the allowed canonical values")
    replacements: dict[str, str] = Field(default_factory=dict, description="expand: short -> long; a key "
                                         "with (\\d) is a regular expression, its value may use \\1")
    instruction: str | None = Field(default=None, description="shown to the model when it has to decide")

    @property
    def operation(self) -> str:
        return OPERATIONS[self.op]


class NormalizationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aliases: dict[str, str] = Field(default_factory=dict, description="attribute name alias -> canonical name")
    rules: list[NormRule] = Field(default_factory=list)

    def rule_for(self, category: str | None, attribute: str) -> NormRule | None:
        found = None
        for r in self.rules:
            if r.attribute == attribute and r.category == (category or "*"):
                return r
            if r.attribute == attribute and r.category == "*":
                found = r
        return found

    def names(self, category: str | None) -> list[str]:
        """The canonical attribute names for a category (its rules and the catch-all ones)."""
        seen: dict[str, None] = {}
        for r in self.rules:
            if r.category in ("*", category):
                seen[r.attribute] = None
        seen.update({v: None for v in self.aliases.values()})
        return list(seen)

    @classmethod
    def load(cls, path: str | Path) -> NormalizationSpec:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"normalization spec {path} does not exist")
        if path.suffix == ".csv":
            return cls.from_wdc_descriptions(path)
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"normalization spec {path} does not parse: {exc}") from None

    @classmethod
    def from_wdc_descriptions(cls, path: str | Path) -> NormalizationSpec:
        rules = []
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                rules.append(_wdc_rule(row))
        return cls(rules=rules)


_UNITS = {"centimeter": ("cm", "inch"), "kilogram": ("kg", "lb"), "gram": ("g", "oz")}


def _wdc_rule(row: dict) -> NormRule:
    param = (row.get("Normalization_params") or "").strip("[] ").lower()
    instruction = (row.get("Normalization_instruction") or "").strip()
    base = {"attribute": row["Attribute"].strip(), "category": row["Category"].strip(),
            "instruction": instruction if instruction != "None" else None}
    text = instruction.lower()
    if param == "unit conversion":
        for word, (unit, default) in _UNITS.items():
            if word in text:
                m = re.search(r"round[^.]*?(one|two|nearest full)", text)
                decimals = {"one": 1, "two": 2, "nearest full": 0}.get(m.group(1) if m else "", 1)
                return NormRule(**base, op="unit", unit=unit, default_unit=default, decimals=decimals)
    if param == "numeric standardization":
        return NormRule(**base, op="number", decimals=0)
    if param == "delete marks":
        return NormRule(**base, op="delete_marks")
    if param == "substring extraction":
        m = re.search(r"digits (\d+) to (\d+)", text)
        return NormRule(**base, op="substring", start=int(m.group(1)) - 1 if m else 0, end=int(m.group(2)) if m else None)
    if param == "to uppercase":
        return NormRule(**base, op="upper")
    if param == "unit expansion":
        pairs = re.findall(r"'([A-Za-z]+)' (?:with|to) '([A-Za-z]+)'", instruction)
        return NormRule(**base, op="expand", replacements={
            f"(?i)(?<=\\d)\\s*-?\\s*{a[0]}{a[1:] and a[1:] + '?'}\\b": f" {b}" for a, b in pairs})
    if param == "name expansion":
        code = row.get("Normalization_Function_Description") or ""
        reps = {}
        for a, b in re.findall(r'replace\(f?"([^"]+)",\s*f?"([^"]+)"\)', code):
            if "{i}" in a:
                reps[r"\b" + re.escape(a).replace(r"\{i\}", "{i}").replace("{i}", r"(\d)") + r"\b"] = b.replace("{i}", r"\1")
            else:
                reps[r"\b" + re.escape(a) + r"\b"] = b
        return NormRule(**base, op="expand", replacements=reps)
    if "generali" in param:
        options = [o.strip() for o in re.findall(r"^\s*-\s*(.+?)\s*$", instruction, flags=re.M)]
        return NormRule(**base, op="choose", options=options)
    return NormRule(**{**base, "instruction": None}, op="keep")


class Change(BaseModel):
    attribute: str
    field: Literal["name", "value", "dropped", "merged"]
    before: str | None
    after: str | None
    by: str = Field(description="'rule:<op>', 'alias', 'colour', 'model' or 'none'")


class NormalizationResult(BaseModel):
    id: str
    ok: Literal[True] = True
    task: Literal["normalize"] = "normalize"
    category: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="canonical name -> canonical value")
    changes: list[Change] = Field(default_factory=list, description="every change, for audit")
    warnings: list[str] = Field(default_factory=list)
