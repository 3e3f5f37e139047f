"""Behaviour-adaptive attribute importance: online profiles per user and per segment.

The rule (documented in the README, pinned by tests):

* every event first decays its profile's counts by ``0.5 ** (1 / half_life)`` (half-life counted in events
  of that profile), then adds the event's weight (view 1, click 2, add_to_cart 4, purchase 8) split equally
  over the attributes the event involves (all of the product's attributes when the event names none);
* an event updates its user's profile and its segment's profile;
* ranking for user U in segment S, the observed counts are ``c = c_U + segment_weight * c_S`` on the
  product's attributes, and the final weight of attribute a is the Dirichlet posterior mean
  ``w_a = (strength * prior_a + c_a) / (strength + sum(c))`` with the model's weights as the prior and
  ``strength`` its pseudo-count: a handful of events nudge the model's order, many events dominate it.
  The weights still sum to 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from engine.errors import InputError
from engine.io import describe_validation
from schemas.ranking import Event

EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


def read_events(path: str | Path) -> Iterator[tuple[int, Event | InputError]]:
    """(line number, Event or the InputError that says what is wrong with that line) per non-blank line."""
    from engine.io import read_jsonl

    for number, rec in read_jsonl(path, strict=False):
        if isinstance(rec, ValueError):
            yield number, InputError(f"events: {str(rec).split(': ', 2)[-1]}", line=number)
            continue
        try:
            yield number, Event.model_validate(rec)
        except ValidationError as exc:
                yield number, InputError(f"events: {describe_validation(exc)} (event is one of "
                                     f"{', '.join(EVENT_WEIGHTS)})", line=number)


@dataclass
class Behaviour:
    strength: float = 8.0
    half_life: float = 50.0
    segment_weight: float = 0.5
    event_weights: dict[str, float] = field(default_factory=lambda: dict(EVENT_WEIGHTS))
    # ("user" | "segment", id) -> attribute (casefolded) -> decayed weighted count
    profiles: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    events: int = 0

    def update(self, event: Event, names: Sequence[str] | None) -> None:
        """Apply one event. ``names``: the attributes of the event's product (None: the product is unknown).
        Raises InputError for an event that cannot be applied; the profiles are then unchanged."""
        if names is None:
            raise InputError(f"event for unknown product {event.product!r}: rank that product in the same run "
                             "(or drop the event)", record_id=event.product)
        known = {n.casefold(): n for n in names}
        involved = event.attribute_names() or list(names)
        unknown = [a for a in involved if a.casefold() not in known]
        if unknown:
            raise InputError(f"event on product {event.product!r} names unknown attribute(s) {unknown}; the product's "
                             f"attributes are {list(names)}", record_id=event.product)
        if not involved:
            raise InputError(f"event on product {event.product!r}: the product has no attributes to credit",
                             record_id=event.product)
        share = self.event_weights[event.event] / len(involved)
        decay = 0.5 ** (1.0 / self.half_life) if self.half_life > 0 else 1.0
        for key in (("user", event.user), ("segment", event.segment)):
            if key[1] is None:
                continue
            prof = self.profiles.setdefault(key, {})
            for a in prof:
                prof[a] *= decay
            for a in involved:
                prof[a.casefold()] = prof.get(a.casefold(), 0.0) + share
        self.events += 1

    def counts(self, names: Sequence[str], user: str | None, segment: str | None) -> dict[str, float]:
        u = self.profiles.get(("user", user), {}) if user is not None else {}
        s = self.profiles.get(("segment", segment), {}) if segment is not None else {}
        return {n: u.get(n.casefold(), 0.0) + self.segment_weight * s.get(n.casefold(), 0.0) for n in names}

    def blend(self, prior: dict[str, float], user: str | None, segment: str | None
              ) -> tuple[dict[str, float], dict[str, float] | None, float]:
        """(final weights, behaviour shares or None, behaviour mass) for a prior that sums to 1."""
        c = self.counts(list(prior), user, segment)
        mass = sum(c.values())
        if mass <= 0:
            return dict(prior), None, 0.0
        final = {n: (self.strength * p + c[n]) / (self.strength + mass) for n, p in prior.items()}
        return final, {n: c[n] / mass for n in prior}, mass
