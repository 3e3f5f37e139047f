"""Query understanding: which phrase of a shopper's search expresses which candidate attribute, and why.

A search mostly says values, not attribute names ("turquoise pillows", "8x10 rug", "king bed"). Each phrase is
attributed to one of the candidate attributes, or to none, with its evidence:

1. rules, longest phrase first: the record's own value of an attribute ("blue" for Color = "blue"); a measure
   (``8x10``, ``60"``, ``3 piece``) for an attribute whose value has the same numbers or whose name is a measure
   (size, width, dimensions, ...); a value the attribute has in Shopify's taxonomy (read from its folder:
   :func:`schemas.taxonomy.shopify_folder`), its base attribute's values for an extended one ("Cover
   color" extends "Color"), and CSS colour names for colour attributes; the attribute's own name;
2. the model, where a phrase fits several attributes: it chooses among them, each scored as the answer to the
   ranking prompt with the phrase as the search, so the choice comes with a probability.

Phrases that fit no attribute, and the product's own words ("rug" in "8x10 rug" for a rug), are kept as
unattributed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache

from prompts.spans import words
from schemas.ranking import RankRequest
from schemas.taxonomy import shopify_folder

MAX_WORDS = 4
_STOP = frozenset("a an and the for with of in on to by or set pack piece pcs pc".split()) - {"set", "piece"}
_MEASURE_NAME = re.compile(r"size|dimension|width|length|height|depth|diameter|capacity|volume|weight", re.I)
_COLOUR_NAME = re.compile(r"colou?r", re.I)
# an NxM dimension, a number with a unit or inch/foot mark, a count of pieces/seats
_MEASURE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:'|ft|feet|foot)?\s*(?:x|by|×)\s*(\d+(?:\.\d+)?)(?:\s*(?:'|ft|feet|foot|in|inch|inches|cm|\"))?"
    r"|(?<![\w.])(\d+(?:\.\d+)?)\s*(\"|''|in\b|inch(?:es)?\b|ft\b|feet\b|foot\b|cm\b|mm\b|m\b|qt\b|quart\b|oz\b|"
    r"gal(?:lon)?\b|l\b|lbs?\b|kg\b|piece\b|pieces\b|pc\b|pcs\b|seater\b|seat\b|drawers?\b|tier\b)", re.I)
_COUNT_NAME = re.compile(r"piece|count|number|seat|capacity|drawer|tier|quantity", re.I)


@dataclass(frozen=True)
class Phrase:
    """A phrase of the search (``start``/``end``: character offsets) and the attribute it expresses, or None."""

    text: str
    start: int
    end: int
    attribute: str | None = None
    probability: float = 0.0
    evidence: str = ""
    candidates: tuple[str, ...] = ()
    rule: str = ""  # how the rules found the candidates (a template of the evidence)
    probabilities: tuple[float, ...] = ()  # per candidate, when the model chose (else the chosen one has 1)

    def reason(self) -> str:
        return f"the search says {self.text!r}, {self.evidence}" if self.attribute else ""


@dataclass
class QueryUnderstanding:
    query: str
    phrases: list[Phrase] = field(default_factory=list)

    def evidence(self) -> dict[str, list[Phrase]]:
        """Attribute -> the phrases attributed to it (most probable first)."""
        out: dict[str, list[Phrase]] = {}
        for p in sorted(self.phrases, key=lambda p: -p.probability):
            if p.attribute:
                out.setdefault(p.attribute, []).append(p)
        return out

    def mass(self) -> dict[str, float]:
        """Attribute -> how much of the search speaks of it: per phrase, each candidate's probability (the chosen
        one's alone when a rule settled it), summed over phrases, at most 1."""
        out: dict[str, float] = {}
        for p in self.phrases:
            if not p.attribute:
                continue
            share = zip(p.candidates, p.probabilities, strict=True) if p.probabilities else [(p.attribute, 1.0)]
            for name, q in share:
                out[name] = min(1.0, out.get(name, 0.0) + q)
        return out

    def as_dict(self) -> dict:
        return {"query": self.query, "phrases": [
            {"text": p.text, "attribute": p.attribute, "probability": round(p.probability, 4),
             "evidence": p.evidence, **({"candidates": list(p.candidates)} if len(p.candidates) > 1 else {})}
            for p in self.phrases]}


@cache
def vocabulary() -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """(attribute name -> its Shopify values, extended attribute -> base attribute), names case-folded, values split
    at '/' ('Retro/Vintage' is two ways of saying it), 'Other' left out; empty when no Shopify folder is found."""
    folder = shopify_folder(required=False)
    if folder is None:
        return {}, {}
    attrs = json.loads((folder / "attributes.json").read_text(encoding="utf-8"))["attributes"]
    values: dict[str, tuple[str, ...]] = {}
    extends: dict[str, str] = {}
    for a in attrs:
        values[a["name"].casefold()] = tuple(x.strip() for v in a.get("values", ()) if v["name"] != "Other"
                                             for x in v["name"].split("/") if x.strip())
        for e in a.get("extended_attributes", ()):
            extends[e["name"].casefold()] = a["name"].casefold()
    return values, extends


@cache
def taxonomy_values(name: str) -> tuple[str, ...]:
    """The values an attribute takes in the taxonomy: its own, else its base attribute's."""
    values, extends = vocabulary()
    key = name.casefold()
    return values.get(key) or values.get(extends.get(key, ""), ())


@cache
def css_colours() -> frozenset[str]:
    """CSS3 colour names (weaker evidence than a taxonomy value: 'linen' is a fabric before it is a colour)."""
    import webcolors

    return frozenset(" ".join(words(c)) for c in webcolors.names("css3"))


# how shoppers write some taxonomy values (singular forms, as prompts.spans.words makes them)
SHOPPER_WORDS = {
    "male": ("men", "man", "mens", "boy", "gentlemen"),
    "female": ("women", "woman", "womens", "lady", "ladies", "girl"),
    "kids": ("kid", "child", "children", "youth"),
    "babies": ("baby", "infant"),
    "toddlers": ("toddler",),
    "adults": ("adult",),
}


_GENERIC = frozenset("wood leather steel metal glass fabric stone plastic".split())


@cache
def value_forms(name: str) -> frozenset[str]:
    """The ways a search may say one of an attribute's taxonomy values (singular words, space-joined): the value,
    without or only its parenthesis ('Polypropylene (PP)'), and the first word of a two-word value ending in a
    generic material ('Oak wood' -> 'oak')."""
    out = set()
    for v in taxonomy_values(name):
        bare = re.sub(r"\s*\(([^)]*)\)", "", v)
        inner = re.findall(r"\(([^)]*)\)", v)
        for form in (v, bare, *inner):
            w = words(form)
            if w:
                out.add(" ".join(w))
                out.update(" ".join(words(x)) for x in SHOPPER_WORDS.get(" ".join(w), ()))
            if len(w) == 2 and w[1] in _GENERIC:
                out.add(w[0])
    return frozenset(out)


def _tokens(query: str) -> list[tuple[str, int, int]]:
    """(singular lower-case word, start, end) per word of the query."""
    return [(w, m.start(), m.end()) for m in re.finditer(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?", query)
            for w in (words(m.group()) or [""])[:1] if w]


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in re.findall(r"\d+(?:\.\d+)?", text))


def rule_candidates(req: RankRequest) -> list[Phrase]:
    """The phrases of the search with the attributes the rules find for each (no model): settled phrases carry
    their attribute and probability 1, ambiguous ones their candidates and no attribute yet."""
    query = req.query or ""
    if not query.strip():
        return []
    tokens = _tokens(query)
    used = [False] * len(tokens)
    phrases: list[Phrase] = []
    record = {n: str(v) for n, v in req.product.attributes.items() if n in req.names and v}
    # measures first: "8 x 10", '60"', "3 piece" are one phrase whatever the tokenizer makes of them
    for m in _MEASURE.finditer(query):
        nums = _numbers(m.group())
        by_value = [n for n, v in record.items() if nums and set(nums) <= set(_numbers(v))]
        unit = (m.group(4) or "").lower()
        counting = unit.rstrip("s") in ("piece", "pc", "seater", "seat", "drawer", "tier")
        pattern = _COUNT_NAME if counting else _MEASURE_NAME
        by_name = [n for n in req.names if pattern.search(n)]
        cands, how = (by_value, "the product's {name} is {value!r}") if by_value else (by_name, "a measure")
        span = [i for i, (_, s, e) in enumerate(tokens) if s >= m.start() and e <= m.end()]
        for i in span:
            used[i] = True
        phrases.append(_settle(m.group().strip(), m.start(), m.end(), cands, how, record))
    title_words = set(words(f"{req.product.title} {req.product.category or ''}"))
    own = title_words - {w for v in record.values() for w in words(v)}
    for size in range(MAX_WORDS, 0, -1):
        for i in range(len(tokens) - size + 1):
            if any(used[i : i + size]):
                continue
            gram = " ".join(t[0] for t in tokens[i : i + size])
            if size == 1 and gram in _STOP:
                continue
            cands, how = _match(gram, req, record, title_words)
            if not cands:
                continue
            start, end = tokens[i][1], tokens[i + size - 1][2]
            for k in range(i, i + size):
                used[k] = True
            phrases.append(_settle(query[start:end], start, end, cands, how, record))
    for (w, s, e), u in zip(tokens, used, strict=True):
        if not u and w not in _STOP:
            phrases.append(Phrase(query[s:e], s, e, evidence="the product itself" if w in own else "no attribute"))
    return sorted(phrases, key=lambda p: p.start)


def _match(gram: str, req: RankRequest, record: dict[str, str], own: set[str]) -> tuple[list[str], str]:
    """The attributes an n-gram (singular words, space-joined) expresses, and how, by the strongest rule: the
    record's own value; a taxonomy value (or a shopper's word for one); a CSS colour name for a colour
    attribute; the attribute's name. Only the record's value may use the product's own words ("coffee" is a
    Flavor in the taxonomy, but in a coffee search it is the product)."""
    def same(value: str) -> bool:
        return " ".join(words(value)) == gram

    hits = [n for n, v in record.items() if same(v)]
    if hits:
        return hits, "the product's {name} is {value!r}"
    if set(gram.split()) <= own:
        return [], ""
    hits = [n for n in req.names if gram in value_forms(n)]
    if hits:
        return hits, "a {kind} value"
    hits = [n for n in req.names if _COLOUR_NAME.search(n) and gram in css_colours()]
    if hits:
        return hits, "a colour"
    hits = [n for n in req.names if same(n) or gram == (words(n) or [""])[-1]]
    return hits, "names the attribute"


def _evidence(how: str, name: str, record: dict[str, str]) -> str:
    return how.format(name=name, value=record.get(name, ""), kind=_kind(name))


def _settle(text: str, start: int, end: int, cands: list[str], how: str, record: dict[str, str]) -> Phrase:
    if len(cands) == 1:
        return Phrase(text, start, end, cands[0], 1.0, _evidence(how, cands[0], record), tuple(cands), how)
    if not cands:
        return Phrase(text, start, end, evidence="no attribute")
    return Phrase(text, start, end, evidence=f"fits {', '.join(cands)}", candidates=tuple(cands), rule=how)


def _kind(name: str) -> str:
    """'colour' for colour attributes, else the attribute's own name in lower case."""
    return "colour" if _COLOUR_NAME.search(name) else name.casefold()


UNMATCHED_MIN = 0.6  # the model's least probability for a phrase no rule matched to count as evidence


def _open(p: Phrase, req: RankRequest) -> Phrase:
    """A phrase no rule matched, offered to the model with every candidate attribute."""
    return Phrase(p.text, p.start, p.end, evidence=p.evidence, candidates=req.names, rule="")


def understand_many(reqs: list[RankRequest], choose=None, unmatched: bool = False) -> list[QueryUnderstanding]:
    """:func:`understand` for many requests, the model asked once for all their ambiguous phrases:
    ``choose([(request, phrase), ...]) -> [probabilities per candidate, ...]``. ``unmatched``: also ask it about
    the phrases no rule matched (among all the request's attributes; kept only at >= UNMATCHED_MIN)."""
    found = [rule_candidates(r) for r in reqs]
    if unmatched and choose:
        found = [[_open(p, r) if p.evidence == "no attribute" else p for p in ps] for r, ps in zip(reqs, found, strict=True)]
    asks = [(r, p) for r, ps in zip(reqs, found, strict=True) for p in ps if not p.attribute and len(p.candidates) > 1]
    answers = iter(choose(asks) if choose and asks else [])
    out = []
    for r, ps in zip(reqs, found, strict=True):
        settled = []
        for p in ps:
            if p.attribute or len(p.candidates) < 2:
                settled.append(p)
                continue
            probs = next(answers, None) if choose else None
            if not p.rule and (probs is None or max(probs) < UNMATCHED_MIN):  # the model is not sure either
                settled.append(Phrase(p.text, p.start, p.end, evidence="no attribute"))
                continue
            settled.append(_chosen(r, p, probs or [1 / len(p.candidates)] * len(p.candidates), bool(probs)))
        out.append(QueryUnderstanding(r.query or "", settled))
    return out


def understand(req: RankRequest, choose=None) -> QueryUnderstanding:
    """The search's phrases attributed to ``req.names`` (``choose``: as for :func:`understand_many`; without it
    ambiguous phrases are split evenly among their candidates)."""
    return understand_many([req], choose)[0]


def _chosen(req: RankRequest, p: Phrase, probs: list[float], by_model: bool) -> Phrase:
    best = max(range(len(probs)), key=lambda k: probs[k])
    name = p.candidates[best]
    record = {n: str(v) for n, v in req.product.attributes.items() if v}
    others = ", ".join(c for c in p.candidates if c != name)
    if not p.rule:  # no rule matched: the model's reading alone
        return Phrase(p.text, p.start, p.end, name, probs[best], f"read by the model as {name} ({probs[best]:.0%})",
                      p.candidates, "", tuple(probs))
    how = f"the model chose it over {others}" if by_model else f"shared evenly with {others}"
    why = f"{_evidence(p.rule, name, record)} ({how}, {probs[best]:.0%})"
    return Phrase(p.text, p.start, p.end, name, probs[best], why, p.candidates, p.rule, tuple(probs))
