"""rank: permutations only, weights summing to 1, the query and behaviour rules, bad input, the eval protocol."""

from __future__ import annotations

import json
import math

import pytest

from engine.behaviour import Behaviour, read_events
from engine.cli import main
from engine.errors import InputError
from engine.types import Completion
from eval.datasets import ShopifyAttribute, match_category, query_labels, read_rank_gold
from eval.metrics import ndcg_at_k, reciprocal_rank
from prompts.tasks.rank import Rank, rank_many
from schemas import Product
from schemas.ranking import Event, RankRequest

from .conftest import DATA

SOFA = {"id": "s1", "title": "3-seat sofa, blue velvet, oak legs", "category": "Sofas",
        "attributes": {"Color": "blue", "Upholstery material": "velvet", "Leg material": "oak", "Width": "84 in"}}
LAMP = {"id": "l1", "title": "Arc floor lamp", "rank": ["Finish", "Height", "Dimmable"]}


def reqs(**ctx):
    return [RankRequest.from_record({**SOFA, **ctx}), RankRequest.from_record({**LAMP, **ctx})]


class Unscored:
    """Hides the backend's score(), so the order is decoded pick by pick under choice constraints."""

    name = "unscored"

    def __init__(self, backend):
        self.backend = backend

    def generate(self, requests):
        return self.backend.generate(requests)


@pytest.mark.parametrize("scored", [True, False])
def test_every_ranking_is_a_permutation_with_weights_summing_to_one(tiny_backend, scored):
    backend = tiny_backend if scored else Unscored(tiny_backend)
    for req, res in zip(reqs(), rank_many(backend, Rank(reasons="none"), reqs()), strict=True):
        assert res.ok and sorted(res.order()) == sorted(req.names)
        weights = [r.weight for r in res.ranking]
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-6) and weights == sorted(weights, reverse=True)
        assert math.isclose(sum(r.model_weight for r in res.ranking), 1.0, abs_tol=1e-6)


def test_decoded_weights_are_stick_breaking_over_the_picks(scripted):
    probs = {"Finish": 0.5, "Dimmable": 0.6}  # first pick Finish (p .5), then Dimmable (p .6), Height is left

    def script(req, call):
        name = next(o for o in ("Finish", "Dimmable", "Height") if o in req.constraint.options)
        return Completion(text=name, finish_reason="stop", logprobs=((name, math.log(probs[name])),))

    [res] = rank_many(scripted(script), Rank(reasons="none"), [RankRequest.from_record(LAMP)])
    got = {r.name: r.weight for r in res.ranking}
    assert got == pytest.approx({"Finish": 0.5, "Dimmable": 0.5 * 0.6, "Height": 0.5 * 0.4})
    assert res.order() == ["Finish", "Dimmable", "Height"]


def test_a_bad_pick_becomes_an_error_record_and_the_rest_go_on(scripted):
    def script(req, call):
        return "Colour" if "sofa" in req.prompt[-1]["content"] else req.constraint.options[0]

    out = rank_many(scripted(script), Rank(reasons="none"), reqs())
    assert not out[0].ok and out[0].id == "s1" and "not one of the attributes" in out[0].error
    assert out[1].ok and len(out[1].ranking) == 3


def test_attributes_the_query_names_come_first(tiny_backend):
    [res, _] = rank_many(tiny_backend, Rank(), reqs(query="blue velvet sofas"))
    assert set(res.order()[:2]) == {"Color", "Upholstery material"}
    assert res.ranking[0].query_match in ("blue", "velvet") and "the search says" in res.ranking[0].reason
    assert res.ranking[2].query_match is None and math.isclose(sum(r.weight for r in res.ranking), 1.0)


def test_behaviour_rule_blends_prior_and_events_exactly():
    b = Behaviour(strength=8, half_life=0)  # no decay
    b.update(Event(event="purchase", product="p", user="u", attributes={"B": "x"}), ["A", "B", "C"])
    final, shares, mass = b.blend({"A": 0.5, "B": 0.3, "C": 0.2}, "u", None)
    assert mass == 8 and shares == {"A": 0, "B": 1, "C": 0}
    assert final == pytest.approx({"A": 4 / 16, "B": (2.4 + 8) / 16, "C": 1.6 / 16})
    # a view without attributes credits every attribute of the product equally; half-life 1 halves old counts
    b = Behaviour(half_life=1)
    b.update(Event(event="click", product="p", segment="s"), ["A", "B"])
    b.update(Event(event="view", product="p", segment="s", attributes=["A"]), ["A", "B"])
    assert b.counts(["A", "B"], None, "s") == pytest.approx({"A": 0.5 * (0.5 + 1), "B": 0.5 * 0.5})
    assert b.counts(["A", "B"], "nobody", None) == {"A": 0, "B": 0}
    assert b.blend({"A": 0.7, "B": 0.3}, "nobody", None) == ({"A": 0.7, "B": 0.3}, None, 0.0)


def test_bad_events_are_refused_and_change_nothing(tmp_path):
    b = Behaviour()
    with pytest.raises(InputError, match="unknown product"):
        b.update(Event(event="click", product="zz", user="u"), None)
    with pytest.raises(InputError, match="unknown attribute"):
        b.update(Event(event="click", product="p", user="u", attributes={"Size": "L"}), ["Color"])
    assert b.profiles == {} and b.events == 0
    f = tmp_path / "ev.jsonl"
    f.write_text('{"event": "like", "product": "p", "user": "u"}\n{"event": "view", "product": "p"}\nnope\n'
                 '{"event": "view", "product": 7, "user": "u"}\n')
    got = list(read_events(f))
    assert [n for n, _ in got] == [1, 2, 3, 4] and all(isinstance(e, InputError) for _, e in got[:3])
    assert "event" in got[0][1].reason and "user" in got[1][1].reason and got[3][1].product == "7"


def test_bad_rank_input_is_an_error_record_and_the_batch_goes_on(tiny_backend):
    from engine.api import Engine

    eng = Engine(backend=tiny_backend)
    out = eng.rank_many([{"id": "e", "title": "x"}, {"id": "d", "title": "y", "rank": ["Color", "color"]}, LAMP],
                        reasons="none")
    assert not out[0].ok and "no attributes to rank" in out[0].error
    assert not out[1].ok and "listed twice" in out[1].error
    assert out[2].ok and out[2].id == "l1"


def test_ranking_metrics_on_hand_made_cases():
    assert ndcg_at_k(["a", "b", "c"], {"a"}) == 1.0
    assert ndcg_at_k(["b", "a", "c"], {"a"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["b", "c", "d", "a"], {"a"}) == 0.0  # beyond k=3
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}) == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k([], {"a"}) == 0.0  # a failed item scores zero
    assert reciprocal_rank(["x", "y", "a"], {"a", "b"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], {"a"}) == 0.0
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], set())


def test_wands_label_derivation():
    attrs = [ShopifyAttribute("color", "Color", ("Blue", "Red")), ShopifyAttribute("fabric", "Fabric", ("Linen",)),
             ShopifyAttribute("size", "Bedding size", ("King", "Queen"))]
    assert query_labels("turquoise linen sheets king", attrs) == {"Color": "turquoise", "Fabric": "Linen",
                                                                  "Bedding size": "King"}
    assert query_labels("linen curtains", attrs) == {"Fabric": "Linen"}  # a colour name another attribute lists
    assert query_labels("Reds", attrs) == {"Color": "Red"}  # plural- and case-insensitive
    cats = ["Furniture > Chairs > Kitchen & Dining Room Chairs", "Vehicles & Parts > Gliders", "Furniture > Gliders"]
    assert match_category("Dining Chairs", cats) == cats[0]
    assert match_category("Patio Rockers & Gliders", cats) == cats[2]  # only home branches


def test_cli_rank_with_events_resume_and_render(tmp_path, tiny_model_dir, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (SOFA, LAMP, {"id": "bad", "title": "no attributes"})) + "\n")
    ev = tmp_path / "ev.jsonl"
    ev.write_text(json.dumps({"user": "u", "product": "l1", "event": "purchase", "attributes": ["Dimmable"]}) + "\n"
                  + json.dumps({"user": "u", "product": "ghost", "event": "click"}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["rank", str(src), "-o", str(out), "--events", str(ev), "--user", "u", "--model", str(tiny_model_dir), "-q"]
    assert main(args) == 0
    recs = {str(r["id"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(recs) == {"s1", "l1", "bad", "events:2"}
    assert "unknown product 'ghost'" in recs["events:2"]["error"] and "no attributes" in recs["bad"]["error"] and recs["bad"]["line"] == 3
    lamp = recs["l1"]
    assert lamp["events_used"] == 8 and lamp["ranking"][0]["behaviour_share"] == 1.0
    assert lamp["ranking"][0]["weight"] > lamp["ranking"][0]["model_weight"]
    assert main([*args, "--resume"]) == 0 and len(out.read_text().splitlines()) == 4  # nothing duplicated
    capsys.readouterr()
    assert main(["render", str(src), "--task", "rank", "--schema", "--format", "messages"]) == 0
    printed = capsys.readouterr().out
    assert "Attributes: Color (blue), Upholstery material (velvet)" in printed and "Color | Upholstery" in printed


def test_model_reasons_are_keyed_by_exactly_the_ranked_names(tiny_backend):
    [res] = rank_many(tiny_backend, Rank(reasons="model", reason_chars=12), [RankRequest.from_record(LAMP)])
    assert res.ok
    if not res.warnings:  # a random model may run out of budget; then the ranking stands without reasons
        assert all(isinstance(r.reason, str) and len(r.reason) <= 12 for r in res.ranking)


def test_few_shot_demos_never_show_the_same_product():
    from prompts.tasks.rank import RankExample

    ex = [RankExample(RankRequest.from_record({**SOFA, "query": q}), "Color") for q in ("blue sofa", "red sofa")]
    other = RankExample(RankRequest.from_record({**LAMP, "query": "brass lamp"}), "Finish")
    task = Rank(examples=(*ex, other), shots=3)
    demos = task.demos(RankRequest.from_record({**SOFA, "query": "green sofa"}))
    assert [d["query"] for d in demos] == ["brass lamp"]
    lamp_demos = json.dumps(task.messages(RankRequest.from_record(LAMP))[1:-1])
    assert "brass lamp" not in lamp_demos and Product.model_validate(SOFA).title in lamp_demos


@pytest.mark.skipif(not (DATA / "wands" / "query.csv").is_file(), reason="needs ../shared/data")
def test_wands_cases_from_the_real_queries():
    rows, skipped = read_rank_gold(DATA / "wands" / "query.csv")
    assert len(rows) >= 80 and sum(skipped.values()) + len(rows) == 480
    for r in rows:
        assert r.relevant and set(r.relevant) <= set(r.request.names) and len(r.relevant) < len(r.request.names)


def test_rank_adapter_trains_on_synthetic_taxonomy_queries(tmp_path, tiny_model_dir):
    from eval.datasets import query_labels, read_shopify_attributes
    from finetune.data import DataReport, rank_pairs, synthetic_rank_examples

    folder = tmp_path / "shopify"
    folder.mkdir()
    values = {"color": ["Blue", "Red"], "fabric": ["Linen", "Wool"], "pattern": ["Striped", "Solid"],
              "size": ["Small", "Large"]}
    (folder / "attributes.json").write_text(json.dumps({"attributes": [
        {"handle": h, "name": h.title(), "extended_attributes": [],
         "values": [{"name": v, "handle": f"{h}__{v}"} for v in vals]} for h, vals in values.items()]}))
    (folder / "category_attributes.json").write_text(json.dumps({"categories": {
        "hg": {"full_name": "Home", "attributes": ["color"]},
        "hg-1": {"full_name": "Home > Curtains", "attributes": ["color", "fabric", "pattern"]},
        "hg-2": {"full_name": "Home > Rugs", "attributes": ["color", "fabric", "pattern", "size"]}}}))
    report = DataReport()
    ex = synthetic_rank_examples(folder, 30, seed=1, report=report)
    assert len(ex) == 30 and report.usable == 30
    by_cat, _ = read_shopify_attributes(folder)
    for e in ex:  # one value of one attribute of a category with >= 3 attributes, and its answer
        attrs = by_cat[f"Home > {e.request.product.title}"]
        assert list(query_labels(e.request.query, attrs)) == [e.answer]
    pairs = rank_pairs(Rank(shots=0), ex[:2])
    assert pairs[0] == (Rank(shots=0).messages(ex[0].request), ex[0].answer)  # the prompt the ranker scores
    out = tmp_path / "adapter"
    assert main(["train", "rank", "--train", str(folder), "--max-records", "40", "-o", str(out), "--model",
                 str(tiny_model_dir), "--max-steps", "2", "--rank", "8", "--batch-size", "4"]) == 0
    prov = json.loads((out / "facet_provenance.json").read_text())
    assert prov["task"] == "rank" and prov["synthetic_from"] == str(folder) and prov["train_data_hash"]
    assert (out / "adapter_config.json").is_file()


def test_every_command_clips_rank_input_at_ranks_own_default():
    """render, eval and rank build the same rank task (it once clipped at 2000 in render/eval, 1000 in rank)."""
    from engine.cli import build_parser
    from prompts.tasks.base import Setup, get, options_from

    def _rank_task(args):
        return get("rank").build(options_from(get("rank").options, vars(args)), Setup())

    parse = build_parser().parse_args
    for argv in (["rank", "x.jsonl"], ["render", "x.jsonl", "--task", "rank"], ["eval", "rank", "--data", "q.csv"]):
        assert _rank_task(parse(argv)).max_input_chars == Rank().max_input_chars == 1000, argv
    assert _rank_task(parse(["rank", "x.jsonl", "--max-input-chars", "50"])).max_input_chars == 50
