"""Spans of product text: candidate values for grounded decoding, and grounding checks."""

from __future__ import annotations

import re
import unicodedata

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_ALNUM = re.compile(r"[a-z0-9]+")
_BAD_EDGE = set(",;:|/-+&*=~")
_BAD_START = _BAD_EDGE | set(".)]}")
_BAD_END = _BAD_EDGE | set("([{")


def candidate_spans(text: str, max_tokens: int = 10, limit: int = 3000) -> list[str]:
    """Distinct substrings of ``text`` that start and end on token boundaries.

    These are the only values grounded extraction may emit. Spans that start or end on
    separators are left out; order is first occurrence, shortest first per start.
    """
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    seen: dict[str, None] = {}
    for i, (s, _, tok) in enumerate(toks):
        if tok in _BAD_START:
            continue
        for j in range(i, min(i + max_tokens, len(toks))):
            e, last = toks[j][1], toks[j][2]
            if "\n" in text[s:e]:
                break
            if last in _BAD_END:
                continue
            seen.setdefault(text[s:e], None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)


def _fold(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).casefold()
    return re.sub(r"[\W_]+", " ", s).strip()


def locate(value: str, text: str) -> tuple[str, tuple[int, int] | None]:
    """How ``value`` is grounded in ``text``: ('exact', span), ('normalized', None) or ('none', None)."""
    v = value.strip()
    if not v:
        return "none", None
    i = text.find(v)
    if i >= 0:
        return "exact", (i, i + len(v))
    i = text.casefold().find(v.casefold())
    if i >= 0:
        return "normalized", (i, i + len(v))
    fv = _fold(v)
    if fv and f" {fv} " in f" {_fold(text)} ":
        return "normalized", None
    return "none", None


def _singular(w: str) -> str:
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if re.search(r"(ch|sh|x|ss)es$", w):
        return w[:-2]
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        return w[:-1]
    return w


def words(text: str) -> list[str]:
    """Lower-case ASCII words of ``text``, accents dropped, each in singular form."""
    text = unicodedata.normalize("NFKD", text.casefold()).encode("ascii", "ignore").decode()
    return [_singular(w) for w in _ALNUM.findall(text)]


def mentions(query: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``query`` as whole words (case-, accent- and plural-insensitive)."""
    p = " ".join(words(phrase))
    return bool(p) and f" {p} " in f" {' '.join(words(query))} "
