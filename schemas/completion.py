"""Attribute completion results."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Filled(BaseModel):
    name: str
    value: str | None
    confidence: float = Field(description="probability of the value's tokens under the model (1.0: not measured)")
    source: Literal["stated", "inferred", "none"] = Field(
        description="'stated': the value is in the product text; 'inferred': an allowed value the text does not "
        "spell out; 'none': abstained")
    abstained_value: str | None = Field(default=None, description="the answer withheld (see ``withheld``)")
    withheld: Literal["low_confidence", "known_value"] | None = Field(
        default=None, description="why ``abstained_value`` was withheld: its confidence is under min_confidence, or "
        "(read by extraction) it lies inside the text of a value the record already has")
    confirmed: bool = Field(default=False, description="the cross-check (extraction, asked the same attributes) "
                            "found the same value; such a value is kept even under min_confidence")


class CompletionResult(BaseModel):
    id: str
    ok: Literal[True] = True
    task: Literal["complete"] = "complete"
    category: str | None = None
    given: dict[str, str] = Field(default_factory=dict, description="the values the record had (never changed)")
    filled: list[Filled] = Field(default_factory=list)
    abstained: list[Filled] = Field(default_factory=list, description="attributes left empty, with why")
    warnings: list[str] = Field(default_factory=list, description="e.g. product text truncated for the prompt")

    def as_dict(self) -> dict[str, str]:
        """The completed record: given values, then the filled ones."""
        return {**self.given, **{f.name: f.value for f in self.filled if f.value is not None}}
