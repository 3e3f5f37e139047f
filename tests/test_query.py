"""Query understanding: which phrase of a search goes to which attribute (rank's first step)."""

from __future__ import annotations

import math

import pytest

from eval.datasets import read_query_gold
from eval.metrics import score_query_attribution
from prompts.tasks.query import understand, understand_many
from prompts.tasks.rank import Rank, rank_many
from schemas import Product
from schemas.ranking import RankRequest
from schemas.taxonomy import shopify_folder

needs_shopify = pytest.mark.skipif(shopify_folder(required=False) is None,
                                   reason="Shopify's taxonomy folder (shared/data/shopify-taxonomy) is not present")


def req(query, names, attributes=None, title="x", category=None):
    return RankRequest(product=Product(id="p", title=title, category=category, attributes=attributes or {}),
                       names=tuple(names), query=query)


def attributed(u):
    return {p.text: p.attribute for p in u.phrases}


def test_a_measure_goes_to_the_attribute_whose_value_has_its_numbers():
    u = understand(req("8x10 rug", ["Material", "Size", "Color"], {"Material": "wool", "Size": "8 x 10 ft",
                                                                 "Color": "ivory"}, "Wool area rug", "Area Rugs"))
    assert attributed(u) == {"8x10": "Size", "rug": None}
    assert "Size is '8 x 10 ft'" in u.phrases[0].evidence and u.mass() == {"Size": 1.0}


@needs_shopify
def test_record_values_then_taxonomy_values_then_names():
    u = understand(req("blue velvet sofa", ["Color", "Upholstery material", "Width"],
                       {"Color": "blue", "Upholstery material": "velvet", "Width": "84 in"}, "3-seat sofa", "Sofas"))
    assert attributed(u) == {"blue": "Color", "velvet": "Upholstery material", "sofa": None}
    # names only (a category schema): Shopify's values of the attribute, or of the one it extends
    u = understand(req("turquoise throw pillows", ["Cover color", "Cover material", "Throw pillow shape"],
                       title="Throw Pillows", category="Throw Pillows"))
    assert attributed(u)["turquoise"] == "Cover color"
    assert attributed(understand(req("king bed frame", ["Bedding size", "Color"], title="Beds")))["king"] == "Bedding size"
    assert attributed(understand(req("mens jeans", ["Target gender", "Fit"], title="Jeans")))["mens"] == "Target gender"


def test_the_products_own_words_and_unknown_words_are_not_evidence():
    u = understand(req("decaf coffee", ["Flavor", "Coffee roast"], title="Coffee", category="Coffee"))
    assert attributed(u)["coffee"] is None  # 'Coffee' is a Flavor value, but here it is the product
    assert u.mass() == {}


@needs_shopify
def test_a_phrase_several_attributes_fit_is_decided_by_the_chooser_or_shared():
    r = req("oak coffee table", ["Leg material", "Tabletop material", "Tabletop shape"], title="Coffee Tables")
    shared = understand(r)
    assert shared.mass() == {"Leg material": 0.5, "Tabletop material": 0.5}
    seen = []

    def choose(asks):
        seen.extend(p.candidates for _, p in asks)
        return [[0.2, 0.8] for _ in asks]

    chosen = understand_many([r], choose)[0]
    assert seen == [("Leg material", "Tabletop material")]
    assert attributed(chosen)["oak"] == "Tabletop material"
    assert chosen.mass() == pytest.approx({"Leg material": 0.2, "Tabletop material": 0.8})
    assert "the model chose it over Leg material" in chosen.phrases[0].evidence


def test_ranking_puts_what_the_search_asks_first_with_weights_summing_to_one(scripted):
    from engine.types import Completion

    # the model prefers whatever is listed first (Material); the search says a size
    def script(request, _n):
        first = request.constraint.options[0]
        return Completion(text=first, finish_reason="stop", logprobs=[(first, math.log(0.9))])

    r = RankRequest.from_record({"id": "rug-1", "title": "Wool rug, 8 x 10 ft", "category": "Area Rugs",
                                 "attributes": {"Material": "wool", "Size": "8 x 10 ft", "Color": "ivory"},
                                 "query": "8x10 rug"})
    [res] = rank_many(scripted(script), Rank(reasons="evidence"), [r])
    assert res.order()[0] == "Size"
    assert math.isclose(sum(x.weight for x in res.ranking), 1.0)
    assert "the search says '8x10'" in res.ranking[0].reason
    assert [p.attribute for p in res.phrases] == ["Size", None]


def test_the_query_eval_scores_phrases_and_can_fail():
    rows = read_query_gold()
    assert len(rows) >= 60 and len({r.request.product.category for r in rows}) >= 25
    golds = [r.phrases for r in rows]
    queries = [r.request.query for r in rows]
    perfect = [[(q.find(ph), q.find(ph) + len(ph), a) for ph, a in g.items()] for g, q in zip(golds, queries, strict=True)]
    assert score_query_attribution(golds, perfect, queries)["accuracy"] == 1.0
    nothing = score_query_attribution(golds, [[] for _ in rows], queries)
    assert nothing["recall"] == 0.0 and nothing["accuracy"] < 0.5
