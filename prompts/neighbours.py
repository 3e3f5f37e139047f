"""Labelled titles that vote on a product's category: its nearest neighbours by character n-grams.

A 135M model does not know that "bosch sms25ew00g" is a dishwasher or that "geschirrspüler" means one; a catalogue's
labelled titles do. ``NeighbourVote`` finds a title's ``k`` nearest labelled titles (TF-IDF over character 2-4-grams
within words, cosine similarity; scikit-learn) and, at each taxonomy level, shares their similarity out among the
choices their paths go through. Classification mixes that vote into the model's choice probabilities
(``prompts.tasks.classify``) with a weight that grows with the nearest title's similarity: a product unlike every
labelled title (below ``low``) is left to the model alone, so a catalogue's categories do not pull in products from
elsewhere in the taxonomy.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.taxonomy import SEP


@dataclass(frozen=True)
class Labelled:
    title: str
    path: tuple[str, ...]
    group: str | None = None  # the product the title is an offer of (PriceRunner's cluster), where known


Neighbours = list[tuple[tuple[str, ...], float]]  # (path, similarity), most similar first


def read_labelled(path: str | Path) -> list[Labelled]:
    """Labelled titles from JSONL (``.jsonl`` or ``.jsonl.gz``: {title, category: "A > B", group?}) or a
    PriceRunner-style CSV."""
    from prompts.formats import read_classification_gold

    return [Labelled(r.product.title, tuple(r.path), r.group) for r in read_classification_gold(path)]


def write_labelled(path: str | Path, rows: Iterable[Labelled]) -> None:
    """``.jsonl.gz`` the same bytes for the same rows (no timestamp in the gzip header)."""
    text = "".join(json.dumps({"title": r.title, "category": SEP.join(r.path), "group": r.group},
                              ensure_ascii=False) + "\n" for r in rows)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(text.encode("utf-8"))


class NeighbourVote:
    """The nearest labelled titles of a product, and their vote among a level's choices."""

    def __init__(self, rows: Sequence[Labelled], k: int = 10, low: float = 0.3, high: float = 0.6,
                 name: str = "labelled titles"):
        if not rows:
            raise ValueError(f"{name}: no labelled titles to vote with")
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.rows, self.k, self.low, self.high, self.name = list(rows), k, low, high, name
        self._vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        self._matrix = self._vectorizer.fit_transform([r.title for r in self.rows])

    def without(self, titles: Collection[str] = (), groups: Collection[str] = ()) -> NeighbourVote:
        """The same vote without these titles (compared case-folded) and groups: an evaluation must never let a
        product, or another offer of it, vote on itself."""
        titles = {t.casefold() for t in titles}
        groups = {g for g in groups if g is not None}
        keep = [r for r in self.rows if r.title.casefold() not in titles and (r.group is None or r.group not in groups)]
        if len(keep) == len(self.rows):
            return self
        return NeighbourVote(keep, self.k, self.low, self.high, self.name)

    def neighbours(self, texts: Sequence[str]) -> list[Neighbours]:
        """The ``k`` most similar labelled titles of each text, most similar first."""
        import numpy as np

        if not texts:
            return []
        sims = (self._vectorizer.transform(list(texts)) @ self._matrix.T).toarray()
        k = min(self.k, sims.shape[1])
        out = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([(self.rows[j].path, float(row[j])) for j in top if row[j] > 0])
        return out

    def weight(self, near: Neighbours) -> float:
        """How much the vote counts for a product, 0..1: 0 while its nearest title's similarity is at most ``low``,
        1 from ``high`` on, linear between."""
        best = near[0][1] if near else 0.0
        return min(1.0, max(0.0, (best - self.low) / (self.high - self.low)))

    @staticmethod
    def shares(near: Neighbours, path: Sequence[str], options: Sequence[str]) -> list[float] | None:
        """The neighbours under ``path``, their similarity shared out among ``options`` (summing to 1); None when no
        neighbour's path goes through one of them."""
        path, depth = tuple(path), len(path)
        votes = dict.fromkeys(options, 0.0)
        for p, s in near:
            if len(p) > depth and p[:depth] == path and p[depth] in votes:
                votes[p[depth]] += s
        total = sum(votes.values())
        return [votes[o] / total for o in options] if total > 0 else None
