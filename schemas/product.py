"""The product record facet reads."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


class Product(BaseModel):
    """One product. ``title`` is required; everything else helps.

    Accepted aliases: ``title`` / ``name`` / ``input`` (OA-Mine), ``input_title`` (WDC-PAVE);
    ``description`` / ``input_description``; ``attributes`` (known attribute values).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(description="Unique product id (line number when the record has none).")
    title: str = Field(validation_alias=AliasChoices("title", "name", "input", "input_title"))
    description: str | None = Field(
        default=None, validation_alias=AliasChoices("description", "input_description")
    )
    category: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="Known attribute values.")

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"id must be a string or an integer, not {type(v).__name__} {v!r}")
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError(f"id must be a string or an integer, not {v!r}")
            v = int(v)
        return str(v)

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title is empty; every product needs a non-empty title")
        return v

    @field_validator("attributes", mode="before")
    @classmethod
    def _stringify(cls, v):
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("attributes must be an object of name -> value")
        return {str(k): str(x) for k, x in v.items() if x is not None}

    def text(self) -> str:
        """Title and description: the text values are grounded in."""
        return self.title if not self.description else f"{self.title}\n{self.description}"
