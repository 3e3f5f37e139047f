"""Readers for the shared evaluation datasets (read by path, never copied into the repo)."""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from engine.io import read_jsonl
from prompts.formats import (  # noqa: F401  (the demonstration file formats, read by eval too)
    ClassGold,
    NormGold,
    normalized_twin,
    read_classification_gold,
    read_normalization_gold,
)
from prompts.spans import mentions, words
from schemas import AttributeSchema, Product
from schemas.ranking import RankRequest


@dataclass(frozen=True)
class GoldProduct:
    product: Product
    gold: dict[str, set[str] | None]  # attribute -> acceptable values; None = n/a


def _gold(target_scores: dict) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for attr, values in target_scores.items():
        vals = {v for v in values if v != "n/a"}
        out[attr] = vals or None
    return out


def read_extraction_gold(path: str | Path) -> list[GoldProduct]:
    """OA-Mine (``input``) and WDC-PAVE (``input_title``/``input_description``) JSONL."""
    path = Path(path)
    rows = []
    for n, rec in read_jsonl(path):
        rec.setdefault("id", f"{path.stem}-{n}")
        rows.append(GoldProduct(Product.model_validate(rec), _gold(rec["target_scores"])))
    return rows


def schema_from_gold(rows: list[GoldProduct], min_count: int = 1) -> AttributeSchema:
    """category -> attributes seen in a (training) split, most frequent first."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        for attr in r.gold:
            counts[r.product.category or "*"][attr] += 1
    return AttributeSchema.from_mapping(
        {cat: [a for a, c in cnt.most_common() if c >= min_count] for cat, cnt in sorted(counts.items())}
    )


# PriceRunner's 10 categories on Shopify's taxonomy (2025-08), so that classification into the taxonomy users get
# can be trained and scored. Shopify has no fridge-freezer category: "Fridge Freezers" goes to Refrigerators with
# "Fridges". "Digital Cameras" is not a leaf in Shopify (compact, DSLR, mirrorless, ...): a prediction anywhere
# under it counts as right (see ``within_gold``).
def label_paths(mapping: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """{label: "A > B > C"} -> {label: ("A", "B", "C")}."""
    return {label: tuple(x.strip() for x in path.split(">")) for label, path in mapping.items()}


PRICERUNNER_SHOPIFY: dict[str, tuple[str, ...]] = label_paths({
        "Mobile Phones": "Electronics > Communications > Telephony > Mobile & Smart Phones",
        "TVs": "Electronics > Video > Televisions",
        "CPUs": "Electronics > Electronics Accessories > Computer Components > Computer Processors",
        "Digital Cameras": "Cameras & Optics > Cameras > Digital Cameras",
        "Fridges": "Home & Garden > Kitchen & Dining > Kitchen Appliances > Refrigerators",
        "Fridge Freezers": "Home & Garden > Kitchen & Dining > Kitchen Appliances > Refrigerators",
        "Freezers": "Home & Garden > Kitchen & Dining > Kitchen Appliances > Freezers",
        "Dishwashers": "Home & Garden > Kitchen & Dining > Kitchen Appliances > Dishwashers",
        "Microwaves": "Home & Garden > Kitchen & Dining > Kitchen Appliances > Microwave Ovens",
        "Washing Machines": "Home & Garden > Household Appliances > Laundry Appliances > Washing Machines",
})


# OA-Mine's 10 categories on Shopify's taxonomy (2025-08): where Shopify splits a category further (Coffee: beans
# or pods; Tea & Infusions; Vitamins & Supplements; Toothbrushes; Shoes; Protective Masks) the gold is the node
# above the split and any sub-category counts as right (``within_gold``). OA-Mine's "Safety Mask" titles are
# disposable face masks, KN95s and respirators: Work Safety Protective Gear > Protective Masks.
OA_MINE_SHOPIFY: dict[str, tuple[str, ...]] = label_paths({
        "Coffee": "Food, Beverages & Tobacco > Beverages > Coffee",
        "Tea": "Food, Beverages & Tobacco > Beverages > Tea & Infusions",
        "Breakfast Cereal": "Food, Beverages & Tobacco > Food Items > Grains, Rice & Cereal > Cereal & Granola",
        "Vitamin": "Health & Beauty > Health Care > Fitness & Nutrition > Vitamins & Supplements",
        "Sunscreen": "Health & Beauty > Personal Care > Cosmetics > Skin Care > Sunscreen",
        "Conditioner": "Health & Beauty > Personal Care > Hair Care > Shampoo & Conditioner > Conditioners",
        "Toothbrush": "Health & Beauty > Personal Care > Oral Care > Toothbrushes",
        "Safety Mask": "Business & Industrial > Work Safety Protective Gear > Protective Masks",
        "Laundry Detergent": "Home & Garden > Household Supplies > Laundry Supplies > Laundry Detergent",
        "Shoes": "Apparel & Accessories > Shoes",
})

# the label maps `facet eval classify --label-map NAME` knows
LABEL_MAPS = {"pricerunner-shopify": PRICERUNNER_SHOPIFY, "oa-mine-shopify": OA_MINE_SHOPIFY}


def map_class_labels(rows: list[ClassGold], mapping: dict[str, tuple[str, ...]]) -> list[ClassGold]:
    """The rows with each one-level label replaced by its path in ``mapping``; an unmapped label is an error."""
    out = []
    for r in rows:
        label = " > ".join(r.path)
        if label not in mapping:
            raise ValueError(f"label {label!r} of {r.product.id} has no path in the label map "
                             f"(known: {', '.join(sorted(mapping))})")
        out.append(ClassGold(r.product, tuple(mapping[label]), r.group))
    return out


def within_gold(gold: tuple[str, ...], pred: tuple[str, ...]) -> tuple[str, ...]:
    """The prediction cut to the gold's depth when it lies at or below the gold node (a gold path that is not a
    leaf, e.g. Shopify's Digital Cameras, is right for any of its sub-categories); else unchanged."""
    return gold if tuple(pred[: len(gold)]) == tuple(gold) else tuple(pred)


def split_by_group(rows: list[ClassGold], n: int | None, seed: int = 0) -> tuple[list[ClassGold], list[ClassGold]]:
    """A seeded random sample of ``n`` rows to evaluate, and the rest minus every group that appears in the
    sample (a demonstration pool that never shows another offer of a product being evaluated)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    chosen = sorted(order[:n] if n else order)
    sample = [rows[i] for i in chosen]
    taken = {r.group for r in sample if r.group is not None}
    picked = set(chosen)
    rest = [r for i, r in enumerate(rows) if i not in picked and (r.group is None or r.group not in taken)]
    return sample, rest


# --- ranking: WANDS queries with labels derived from the Shopify taxonomy -------------------------------------

_STOP = frozenset({"and", "for", "of", "the", "a", "with", "other"})
# Shopify branches a home/furniture query class is looked up in (WANDS is Wayfair's catalogue)
WANDS_ROOTS = ("Furniture", "Home & Garden", "Hardware", "Baby & Toddler", "Animals & Pet Supplies")


@dataclass(frozen=True)
class ShopifyAttribute:
    handle: str
    name: str
    values: tuple[str, ...]


def read_shopify_attributes(folder: str | Path) -> tuple[dict[str, list[ShopifyAttribute]], list[str]]:
    """(category full name -> its attributes, category full names) from Shopify's attributes.json and
    category_attributes.json. Extended attributes (e.g. 'Leg color') carry their base attribute's values."""
    folder = Path(folder)
    attrs = json.loads((folder / "attributes.json").read_text(encoding="utf-8"))["attributes"]
    by_handle = {}
    for a in attrs:
        values = tuple(v["name"] for v in a.get("values", ()))
        by_handle[a["handle"]] = ShopifyAttribute(a["handle"], a["name"], values)
        for e in a.get("extended_attributes", ()):
            by_handle[e["handle"]] = ShopifyAttribute(e["handle"], e["name"], values)
    cats = json.loads((folder / "category_attributes.json").read_text(encoding="utf-8"))["categories"]
    out = {c["full_name"]: [by_handle[h] for h in c["attributes"] if h in by_handle] for c in cats.values()}
    return out, list(out)


def match_category(name: str, categories: list[str], roots: tuple[str, ...] = WANDS_ROOTS) -> str:
    """The category whose last level is most like ``name`` (Jaccard of singular content words; ties: more
    words shared with the full path, then the shorter path), among categories under ``roots``."""
    want = {w for w in words(name) if w not in _STOP}

    def key(full: str):
        leaf = {w for w in words(full.split(" > ")[-1]) if w not in _STOP}
        path = {w for w in words(full) if w not in _STOP}
        return (len(want & leaf) / (len(want | leaf) or 1), len(want & path), -len(full))

    pool = [c for c in categories if c.split(" > ")[0] in roots] or categories
    return max(pool, key=key)


def query_labels(query: str, attributes: list[ShopifyAttribute]) -> dict[str, str]:
    """The attributes a query mentions -> the words that mention it: the attribute's name, one of its values,
    or (for a colour attribute) a CSS3 colour name that no other attribute of the category lists as a value."""
    import webcolors

    other_values = {v.casefold() for a in attributes for v in a.values}
    labels = {}
    for a in attributes:
        hits = [p for p in (a.name, *a.values) if mentions(query, p)]
        if not hits and re.search(r"colou?r", a.name, re.I):
            hits = [c for c in webcolors.names("css3") if c not in other_values and mentions(query, c)]
        if hits:
            labels[a.name] = max(hits, key=len)
    return labels


@dataclass(frozen=True)
class RankGold:
    request: RankRequest  # product = the query's class, names = its Shopify category's attributes
    relevant: dict[str, str]  # attribute the query mentions -> the words that mention it
    query_class: str
    category: str  # the Shopify category the class was matched to


def read_rank_gold(path: str | Path, taxonomy: str | Path | None = None, min_attributes: int = 3
                   ) -> tuple[list[RankGold], Counter]:
    """WANDS queries as ranking cases, and the count of queries left out per reason.

    Derivation (the labels are lexical, so they are noisy but reproducible): each query's product class is
    matched to a Shopify category (:func:`match_category`); the attributes to rank are that category's; an
    attribute is relevant when the query mentions it (:func:`query_labels`). Queries without a class, whose
    category has fewer than ``min_attributes`` attributes, that mention none of them, or that mention all of
    them (nothing to rank) are left out.
    """
    path = Path(path)
    folder = Path(taxonomy) if taxonomy else path.parent.parent / "shopify-taxonomy"
    if not (folder / "category_attributes.json").is_file():
        raise FileNotFoundError(f"{folder}/category_attributes.json (Shopify taxonomy with attributes) not found; "
                                "give --taxonomy FOLDER")
    by_cat, names = read_shopify_attributes(folder)
    matched: dict[str, str] = {}
    rows, skipped = [], Counter()
    with path.open(encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            query, cls = (rec.get("query") or "").strip(), (rec.get("query_class") or "").strip()
            if not query or not cls:
                skipped["no query class"] += 1
                continue
            if cls not in matched:
                matched[cls] = match_category(cls, names)
            cat = matched[cls]
            attrs = by_cat[cat]
            if len(attrs) < min_attributes:
                skipped[f"category has < {min_attributes} attributes"] += 1
                continue
            labels = query_labels(query, attrs)
            if not labels:
                skipped["query mentions no attribute"] += 1
                continue
            if len(labels) == len(attrs):
                skipped["query mentions every attribute"] += 1
                continue
            product = Product(id=str(rec.get("query_id") or len(rows)), title=cls, category=cls)
            rows.append(RankGold(RankRequest(product=product, names=tuple(a.name for a in attrs), query=query),
                                 labels, cls, cat))
    return rows, skipped


@dataclass(frozen=True)
class QueryGold:
    request: RankRequest
    phrases: dict[str, str | None]  # phrase of the query -> the attribute it expresses (None: none)


QUERY_ATTRIBUTION = Path(__file__).parent / "data" / "query_attribution.jsonl"


def read_query_gold(path: str | Path = QUERY_ATTRIBUTION) -> list[QueryGold]:
    """Hand-labelled searches (``eval/data/query_attribution.jsonl``: query, Shopify category, its attribute
    names, phrase -> attribute or null). The product is the category alone, with attribute names only."""
    rows = []
    for n, rec in read_jsonl(path):
        leaf = rec["category"].split(" > ")[-1]
        product = Product(id=f"q{n}", title=leaf, category=leaf)
        rows.append(QueryGold(RankRequest(product=product, names=tuple(rec["attributes"]), query=rec["query"]),
                              rec["phrases"]))
    return rows
