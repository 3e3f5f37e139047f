"""Attribute-importance ranking: the request, behaviour events and the result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.product import Product

EventKind = Literal["view", "click", "add_to_cart", "purchase"]


class RankRequest(BaseModel):
    """One product whose attributes to order, and the context to order them for.

    ``names``: the attributes to rank (default: the keys of ``product.attributes``). ``query``: the shopper's
    search; ``user`` / ``segment``: whose behaviour (events) to blend in.
    """

    model_config = ConfigDict(extra="forbid")

    product: Product
    names: tuple[str, ...] = ()
    query: str | None = None
    user: str | None = None
    segment: str | None = None

    @model_validator(mode="after")
    def _names(self) -> RankRequest:
        names = self.names or tuple(self.product.attributes)
        if not names:
            raise ValueError("no attributes to rank: give the product 'attributes' ({name: value}) or a 'rank' "
                             "list of attribute names")
        seen: dict[str, str] = {}
        for n in names:
            if not str(n).strip():
                raise ValueError("an attribute name to rank is empty")
            if n.casefold() in seen:
                raise ValueError(f"attribute {n!r} is listed twice (also as {seen[n.casefold()]!r})")
            seen[n.casefold()] = n
        self.names = tuple(names)
        return self

    @classmethod
    def from_record(cls, rec: dict) -> RankRequest:
        """A JSONL record: a product (title, attributes, ...) plus optional ``rank`` (names), ``query``,
        ``user`` and ``segment``."""
        rec = dict(rec)
        extra = {k: rec.pop(k) for k in ("query", "user", "segment") if k in rec}
        names = rec.pop("rank", None)
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ValueError("'rank' must be a list of attribute names")
        return cls(product=Product.model_validate(rec), names=tuple(names or ()), **extra)


class Event(BaseModel):
    """One behaviour event: who did what to which product, and the attribute values involved (e.g. the facet
    filter clicked). Without ``attributes`` every attribute of the product is credited equally."""

    model_config = ConfigDict(extra="ignore")

    event: EventKind
    product: str = Field(description="id of the product the event is about")
    user: str | None = None
    segment: str | None = None
    attributes: dict[str, str | None] | list[str] = Field(default_factory=dict)

    @field_validator("product", mode="before")
    @classmethod
    def _id(cls, v):
        return str(v) if isinstance(v, (int, str)) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _who(self) -> Event:
        if self.user is None and self.segment is None:
            raise ValueError("an event needs a 'user' or a 'segment' to update")
        return self

    def attribute_names(self) -> list[str]:
        return list(self.attributes) if isinstance(self.attributes, dict) else list(self.attributes)


class QueryPhrase(BaseModel):
    text: str
    attribute: str | None = Field(description="the attribute the phrase expresses; None: none of the candidates")
    probability: float = 0.0
    evidence: str = ""


class RankedAttribute(BaseModel):
    name: str
    weight: float = Field(description="final importance; the weights of one ranking sum to 1")
    model_weight: float = Field(description="the model's prior weight (before behaviour)")
    query_match: str | None = Field(
        default=None, description="the phrase(s) of the query attributed to this attribute (see ``phrases``)")
    query_share: float = Field(default=0.0, description="how much of the search speaks of this attribute (0-1)")
    behaviour_share: float | None = Field(
        default=None, description="share of the observed (decayed, weighted) behaviour on this attribute; None "
        "when no events apply")
    reason: str = ""


class RankingResult(BaseModel):
    id: str
    ok: Literal[True] = True
    task: Literal["rank"] = "rank"
    query: str | None = None
    user: str | None = None
    segment: str | None = None
    ranking: list[RankedAttribute]
    events_used: float = Field(default=0.0, description="weighted behaviour mass blended in (0: model only)")
    phrases: list[QueryPhrase] = Field(default_factory=list, description="the search, phrase by phrase: which "
                                       "attribute each expresses and the evidence")
    warnings: list[str] = Field(default_factory=list)

    def order(self) -> list[str]:
        return [r.name for r in self.ranking]
