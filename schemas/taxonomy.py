"""Category taxonomies: a flat label set or a tree of paths (e.g. Shopify's product taxonomy).

Formats read by :meth:`Taxonomy.load`:

- Shopify ``categories.txt``: ``gid://shopify/TaxonomyCategory/xx-1 : Parent > Child`` per line;
- plain text: one category per line, a path written ``Parent > Child`` (``#`` starts a comment);
- JSON: a list of labels or paths, or a nested object ``{"Parent": {"Child": {}}}``.

The classify task decodes level by level: the choices at each step are the children of the node
chosen so far, so a prediction is always a real path of the taxonomy.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

# Shopify's open product taxonomy (MIT): a folder with categories.txt, attributes.json, category_attributes.json,
# read where it lies (never copied into facet): $FACET_SHOPIFY_TAXONOMY, else shared/data/shopify-taxonomy beside the
# checkout. classify uses its categories when no taxonomy is given; ranking reads its attributes' values.
SHOPIFY_ENV = "FACET_SHOPIFY_TAXONOMY"


def shopify_folder(required: bool = True) -> Path | None:
    """The Shopify taxonomy folder, or (``required`` False) None when there is none; else a clear error."""
    import os

    env = os.environ.get(SHOPIFY_ENV)
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "shopify-taxonomy"
    if (folder / "categories.txt").is_file():
        return folder
    if not required:
        return None
    raise FileNotFoundError(f"no Shopify taxonomy at {folder}: pass --taxonomy FILE (or taxonomy=...), or point "
                            f"{SHOPIFY_ENV} at a folder with Shopify's categories.txt and attributes.json")


def shopify_taxonomy_file() -> Path:
    """Shopify's categories.txt: the taxonomy classify uses when none is given."""
    return shopify_folder() / "categories.txt"
SEP = " > "


class ClassificationResult(BaseModel):
    id: str
    ok: bool = True
    task: str = "classify"
    path: list[str] = Field(description="Chosen category path, root first.")
    label: str = Field(description="The chosen (deepest) category.")
    confidence: float = Field(description="Probability of the whole path (product of per-level probabilities).")
    alternatives: list[tuple[str, float]] = Field(
        default_factory=list, description="Top-k full paths at the last level with their probabilities."
    )
    needs_review: bool = Field(description="confidence below the review threshold")


class Taxonomy:
    """Category paths as a tree. ``children(())`` are the top-level categories."""

    def __init__(self, paths: list[tuple[str, ...]], name: str = "taxonomy"):
        if not paths:
            raise ValueError(f"{name}: the taxonomy has no categories")
        self.name = name
        self._children: dict[tuple[str, ...], list[str]] = {}
        for path in paths:
            for depth in range(len(path)):
                parent, child = path[:depth], path[depth]
                kids = self._children.setdefault(parent, [])
                if child not in kids:
                    kids.append(child)
        self.paths = sorted({p[: d + 1] for p in paths for d in range(len(p))})

    def children(self, path: tuple[str, ...] | list[str] = ()) -> list[str]:
        return list(self._children.get(tuple(path), []))

    def is_leaf(self, path) -> bool:
        return not self._children.get(tuple(path))

    @property
    def depth(self) -> int:
        return max(len(p) for p in self.paths)

    @property
    def flat(self) -> bool:
        return self.depth == 1

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path) -> bool:
        if isinstance(path, str):
            path = tuple(path.split(SEP))
        return tuple(path) in set(self.paths)

    @classmethod
    def from_labels(cls, labels, name: str = "labels") -> Taxonomy:
        return cls([tuple(x.strip() for x in str(label).split(SEP.strip())) for label in labels], name)

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"taxonomy file {path} not found")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc}); expected a list of labels or a nested object") from None
            if isinstance(data, list):
                return cls.from_labels(data, path.name)
            if isinstance(data, dict):
                paths: list[tuple[str, ...]] = []

                def walk(node: dict, prefix: tuple[str, ...]) -> None:
                    for k, v in node.items():
                        paths.append((*prefix, k))
                        if isinstance(v, dict):
                            walk(v, (*prefix, k))
                        elif isinstance(v, list):
                            paths.extend((*prefix, k, str(c)) for c in v)

                walk(data, ())
                return cls(paths, path.name)
            raise ValueError(f"{path}: expected a JSON list of labels or a nested object, got {type(data).__name__}")
        labels = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("gid://"):
                if " : " not in line:
                    raise ValueError(f"{path}: line {n}: expected 'gid://... : Parent > Child', got {line[:80]!r}")
                line = line.split(" : ", 1)[1].strip()
            labels.append(line)
        return cls.from_labels(labels, path.name)
