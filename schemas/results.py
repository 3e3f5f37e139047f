"""Result records written by facet (one JSON object per line)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.normalization import NormalizationResult

Grounding = Literal["exact", "normalized", "none"]


class AttributeValue(BaseModel):
    name: str
    value: str
    grounding: Grounding = Field(
        description="'exact': the value occurs verbatim in the product text; 'normalized': it occurs "
        "after case/space/punctuation folding; 'none': not found in the text (review it)."
    )
    span: tuple[int, int] | None = Field(
        default=None, description="Character offsets of the value in title+'\\n'+description."
    )

    @property
    def grounded(self) -> bool:
        return self.grounding != "none"


class ExtractionResult(BaseModel):
    id: str
    ok: Literal[True] = True
    task: Literal["extract"] = "extract"
    category: str | None = None
    attributes: list[AttributeValue] = Field(default_factory=list)
    missing: list[str] = Field(
        default_factory=list, description="Asked-for attributes the model found absent (null)."
    )
    warnings: list[str] = Field(default_factory=list)
    normalized: NormalizationResult | None = Field(
        default=None, description="With a normalization spec (`facet extract --spec`): the values found, "
        "normalized (canonical name -> value), with every change for audit."
    )

    def as_dict(self) -> dict[str, str]:
        return {a.name: a.value for a in self.attributes}


class ErrorRecord(BaseModel):
    id: str | None
    ok: Literal[False] = False
    task: str
    line: int | None = None
    error: str
    raw: str | None = Field(default=None, description="The model's raw answer, when there was one.")
    input: Any = None
