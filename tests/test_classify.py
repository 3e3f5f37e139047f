"""classify: taxonomies, answer scoring, level-by-level decoding, metric, CLI and eval."""

from __future__ import annotations

import json
import math

import pytest

from engine.cli import main
from engine.types import ScoreRequest
from eval.datasets import ClassGold, split_by_group
from eval.metrics import score_classification
from prompts.formats import read_classification_gold
from prompts.tasks.classify import Classify, classify_many
from schemas import Product
from schemas.taxonomy import Taxonomy

TREE = {"Home": {"Kitchen": ["Mugs", "Skillets"], "Garden": []}, "Apparel": {"Shoes": [], "Jeans": []}}
PRODUCTS = [Product(id="a", title="Acme red ceramic mug 12oz"), Product(id="b", title="Levi's 501 jeans W32"),
            Product(id="c", title="Lodge cast iron skillet 10 inch")]


@pytest.fixture()
def tree(tmp_path):
    path = tmp_path / "tax.json"
    path.write_text(json.dumps(TREE))
    return Taxonomy.load(path)


def test_taxonomy_formats(tmp_path, tree):
    assert tree.children(()) == ["Home", "Apparel"]
    assert tree.children(("Home", "Kitchen")) == ["Mugs", "Skillets"]
    assert tree.is_leaf(("Home", "Garden")) and not tree.is_leaf(("Home",)) and tree.depth == 3
    shop = tmp_path / "categories.txt"
    shop.write_text("# Shopify\n\ngid://shopify/TaxonomyCategory/ap : Animals\n"
                    "gid://shopify/TaxonomyCategory/ap-1 : Animals > Live Animals\n")
    t = Taxonomy.load(shop)
    assert t.children(()) == ["Animals"] and t.children(("Animals",)) == ["Live Animals"]
    flat = tmp_path / "labels.txt"
    flat.write_text("TVs\nFridges\n")
    assert Taxonomy.load(flat).flat and len(Taxonomy.load(flat)) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        Taxonomy.load(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no categories"):
        Taxonomy.load(empty)


def test_scores_with_a_shared_prompt_cache_equal_a_full_forward_pass(tiny_backend):
    """Choices of different lengths scored through one shared prompt cache give exactly the
    log-probability of prompt+choice+end computed in one plain forward pass."""
    import torch

    tok, model = tiny_backend.tokenizer, tiny_backend.model
    prompt = ({"role": "user", "content": "a much longer product title here"},)
    choices = ["Mugs", "Skillets and frying pans", "x", "Jeans"]
    reqs = [ScoreRequest(prompt, c) for c in choices] + [ScoreRequest(({"role": "user", "content": "short"},), "Mugs")]
    got = tiny_backend.score(reqs)

    def reference(r):
        p = tok(tiny_backend.prompt_text(r), add_special_tokens=False).input_ids
        c = tok(r.continuation, add_special_tokens=False).input_ids + [tok.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
        return sum(float(logp[len(p) + t - 1, c[t]]) for t in range(len(c)))

    assert got == pytest.approx([reference(r) for r in reqs], abs=1e-4)
    assert all(s < 0 for s in got)


@pytest.mark.parametrize(("scored", "calibrate"), [(True, False), (True, True), (False, False)],
                         ids=["scored", "scored-calibrated", "choice-decoded"])
def test_every_answer_is_a_real_leaf_path(tiny_backend, tree, scored, calibrate):
    task = Classify(taxonomy=tree, top_k=2, max_scored_choices=64 if scored else 0, calibrate=calibrate)
    results = classify_many(tiny_backend, task, PRODUCTS)
    assert [r.id for r in results] == ["a", "b", "c"]
    for r in results:
        assert r.ok and tuple(r.path) in tree and tree.is_leaf(r.path) and r.label == r.path[-1]
        assert 0 < r.confidence <= 1 + 1e-6 and r.needs_review == (r.confidence < 0.5)
        probs = [p for _, p in r.alternatives]
        assert probs == sorted(probs, reverse=True) and len(probs) <= 2
        if scored:
            assert r.alternatives[0] == (" > ".join(r.path), pytest.approx(r.confidence))


def test_a_bad_answer_becomes_an_error_record_and_the_rest_go_on(scripted, tree):
    def script(req, call):
        text = req.prompt[-1]["content"]
        if "mug" in text:
            return "Kitchenware"  # never a valid choice
        opts = text.split("Choose one: ")[1].split(" | ")
        return opts[0]

    results = classify_many(scripted(script), Classify(taxonomy=tree), PRODUCTS)
    assert not results[0].ok and results[0].id == "a" and "not a category" in results[0].error
    assert results[1].ok and results[1].path == ["Home", "Kitchen", "Mugs"]


def test_classification_metric():
    golds = [("A", "x"), ("A", "y"), ("B", "z"), ("B", "z")]
    preds = [("A", "x"), ("A", "x"), ("B", "z"), None]
    s = score_classification(golds, preds)
    assert s["accuracy"] == 0.5 and s["failures"] == 1
    assert s["level_accuracy"] == [0.75, 0.5]
    assert s["per_label"]["x"]["precision"] == 0.5 and s["per_label"]["z"]["recall"] == 0.5
    assert math.isclose(s["macro_f1"], (2 / 3 + 0 + 2 / 3) / 3)


def test_eval_sample_never_shares_a_group_with_the_demonstration_pool():
    rows = [ClassGold(Product(id=str(i), title=f"t{i}"), ("L",), str(i // 3)) for i in range(30)]
    sample, pool = split_by_group(rows, 5, seed=1)
    assert len(sample) == 5 and {r.group for r in sample}.isdisjoint({r.group for r in pool})
    assert split_by_group(rows, 5, seed=1)[0] == sample  # seeded


def test_cli_classify_and_eval(tmp_path, tiny_model_dir, capsys):
    tax = tmp_path / "tax.json"
    tax.write_text(json.dumps(TREE))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "title": "red mug"}) + "\nnot json\n" + json.dumps({"id": "b", "title": "jeans"}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["classify", str(src), "-o", str(out), "--taxonomy", str(tax), "--model", str(tiny_model_dir), "-q"]
    assert main(args) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(str(r["id"]) for r in recs) == ["a", "b", "line:2"]
    assert all(r["ok"] is False for r in recs if r["id"] == "line:2")
    assert main([*args, "--resume"]) == 0 and len(out.read_text().splitlines()) == 3  # nothing duplicated

    csv = tmp_path / "dev.csv"
    csv.write_text("Product ID,Product Title,Cluster ID,Category Label\n"
                   + "".join(f"{i},item {i} {lab},{i // 2},{lab}\n" for i, lab in enumerate(["TVs", "Fridges"] * 6)))
    rep_dir = tmp_path / "eval"
    assert main(["eval", "classify", "--data", str(csv), "--limit", "4", "--examples", str(csv), "--shots", "2",
                 "--model", str(tiny_model_dir), "-o", str(rep_dir)]) == 0
    rep = json.loads((rep_dir / "report.json").read_text())
    assert rep["summary"]["products"] == 4 and rep["confusion"]["labels"] == ["Fridges", "TVs"]
    assert sum(map(sum, rep["confusion"]["matrix"])) == 4 and rep["provenance"]["shots"] == 2
    assert (rep_dir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in capsys.readouterr().out
    assert rep["provenance"]["vote"] is None  # the shipped titles' paths are not in this taxonomy: no vote

    # the data's own titles vote: never the evaluated ones, nor other offers of their products (same cluster)
    assert main(["eval", "classify", "--data", str(csv), "--limit", "4", "--neighbours", str(csv),
                 "--model", str(tiny_model_dir), "-o", str(rep_dir)]) == 0
    rep = json.loads((rep_dir / "report.json").read_text())
    sample, rest = split_by_group(read_classification_gold(csv), 4, 0)
    assert rep["provenance"]["vote"] == {"titles": len(rest), "from": str(csv), "weight": Classify.vote_weight}
    assert len(rest) < 12 - 4  # some clusters had another offer outside the sample


def test_label_maps_by_name_or_file_and_unmapped_labels_are_named(tmp_path):
    from eval.datasets import OA_MINE_SHOPIFY, map_class_labels
    from eval.tasks import label_map
    from prompts.formats import ClassGold
    from schemas import Product

    assert label_map("oa-mine-shopify") is OA_MINE_SHOPIFY
    assert label_map("oa-mine-shopify")["Shoes"] == ("Apparel & Accessories", "Shoes")
    f = tmp_path / "map.json"
    f.write_text('{"Mugs": "Home & Garden > Kitchen & Dining > Mugs"}')
    mapping = label_map(str(f))
    assert mapping == {"Mugs": ("Home & Garden", "Kitchen & Dining", "Mugs")}
    rows = [ClassGold(Product(id="a", title="Red mug"), ("Mugs",), None)]
    assert map_class_labels(rows, mapping)[0].path == ("Home & Garden", "Kitchen & Dining", "Mugs")
    with pytest.raises(ValueError, match="label 'Cups' of b has no path"):
        map_class_labels([ClassGold(Product(id="b", title="Cup"), ("Cups",), None)], mapping)


class TableScorer:
    """A fake scoring backend: the probability of each choice under each path so far comes from ``table``."""

    name = "table"

    def __init__(self, table: dict[str, dict[str, float]]):
        self.table, self.asked = table, []

    def score(self, requests):
        out = []
        for r in requests:
            text = r.prompt[-1]["content"]
            path = text.split("Category so far: ")[1].split("\n")[0].strip() if "Category so far: " in text else ""
            self.asked.append(path)
            out.append(math.log(self.table[path][r.continuation]))
        return out


# greedy takes Home (0.6) then Kitchen > Mugs at 0.6 * 0.9 * 0.55 = 0.297; Apparel > Jeans is 0.4 * 0.95 = 0.38
SPLIT = {"": {"Home": 0.6, "Apparel": 0.4}, "Home": {"Kitchen": 0.9, "Garden": 0.1},
         "Home > Kitchen": {"Mugs": 0.55, "Skillets": 0.45}, "Apparel": {"Shoes": 0.05, "Jeans": 0.95}}


@pytest.mark.parametrize(("search", "path", "levels"), [(0, ["Home", "Kitchen", "Mugs"], 3),
                                                         (8, ["Apparel", "Jeans"], 4),
                                                         (2, ["Home", "Kitchen", "Mugs"], 3)])
def test_best_first_search_finds_the_most_probable_path_within_its_budget(tree, search, path, levels):
    """search=0 is greedy; a budget of 8 levels finds Apparel > Jeans (0.38), more probable than any Home leaf
    (0.297 at most); a budget of 2 is spent on Home and Home > Kitchen, so the search then goes greedily down from
    there."""
    backend = TableScorer(SPLIT)
    [r] = classify_many(backend, Classify(taxonomy=tree, search=search, top_k=3), PRODUCTS[:1])
    assert r.path == path and len(set(backend.asked)) == levels
    p = {2: 0.4 * 0.95, 3: 0.6 * 0.9 * 0.55}[len(path)]
    assert r.confidence == pytest.approx(p) and r.alternatives[0] == (" > ".join(path), pytest.approx(p))
    assert all(q <= p + 1e-9 for _, q in r.alternatives) and r.needs_review


def test_a_confident_product_costs_no_more_levels_with_search(tree):
    sure = {"": {"Home": 0.99, "Apparel": 0.01}, "Home": {"Kitchen": 0.99, "Garden": 0.01},
            "Home > Kitchen": {"Mugs": 0.99, "Skillets": 0.01}}
    backend = TableScorer(sure)
    [r] = classify_many(backend, Classify(taxonomy=tree, search=8), PRODUCTS[:1])
    assert r.path == ["Home", "Kitchen", "Mugs"] and backend.asked == ["", "", "Home", "Home",
                                                                         "Home > Kitchen", "Home > Kitchen"]


# -- the neighbour vote: labelled titles beside the model ----------------------------------------------------------

SKILLETS = ("Home", "Kitchen", "Skillets")


def labelled_rows():
    from prompts.neighbours import Labelled

    return [Labelled("Lodge cast iron skillet 10 inch", SKILLETS, "g1"),
            Labelled("Lodge cast iron skillet 12 inch pre-seasoned", SKILLETS, "g1"),
            Labelled("Levi's 501 jeans W34 L32", ("Apparel", "Jeans"), "g2"),
            Labelled("Wrangler relaxed fit jeans", ("Apparel", "Jeans"), None)]


def test_neighbours_come_nearest_first_and_share_their_vote_among_a_levels_choices():
    from prompts.neighbours import NeighbourVote

    vote = NeighbourVote(labelled_rows(), k=3)
    [near] = vote.neighbours(["Lodge cast iron skillet 10 inch"])
    assert near[0] == (SKILLETS, pytest.approx(1.0)) and [s for _, s in near] == sorted((s for _, s in near), reverse=True)
    assert vote.weight(near) == 1.0  # identical to a labelled title: the vote counts in full
    assert vote.shares(near, (), ["Home", "Apparel"])[0] > 0.5
    assert vote.shares(near, ("Home",), ["Kitchen", "Garden"]) == [1.0, 0.0]
    assert vote.shares(near, ("Home", "Garden"), ["x"]) is None  # no neighbour down there: no vote
    [far] = vote.neighbours(["zzz qqq"])
    assert vote.weight(far) == 0.0  # unlike every labelled title: the model alone


def test_the_vote_turns_a_close_title_and_leaves_an_unlike_one_to_the_model(tree):
    from prompts.neighbours import NeighbourVote

    vote = NeighbourVote(labelled_rows())
    skillet, mug = PRODUCTS[2], PRODUCTS[0]
    alone = classify_many(TableScorer(SPLIT), Classify(taxonomy=tree), [skillet, mug])
    assert [r.path[-1] for r in alone] == ["Mugs", "Mugs"]  # the table's greedy path
    w = 0.8
    [voted_, left] = classify_many(TableScorer(SPLIT), Classify(taxonomy=tree, vote=vote, vote_weight=w), [skillet, mug])
    assert voted_.path == list(SKILLETS)
    [near] = vote.neighbours([skillet.title])
    wt, top = w * vote.weight(near), vote.shares(near, (), ["Home", "Apparel"])[0]  # the jeans vote a little too
    assert voted_.confidence == pytest.approx(((1 - wt) * 0.6 + wt * top) * ((1 - wt) * 0.9 + wt) * ((1 - wt) * 0.45 + wt))
    assert left.path == alone[1].path and left.confidence == pytest.approx(alone[1].confidence)
    off = classify_many(TableScorer(SPLIT), Classify(taxonomy=tree, vote=vote, vote_weight=0), [skillet])
    assert off[0].path == alone[0].path


def test_labelled_titles_files_round_trip_and_leave_out_evaluated_titles(tmp_path, tree):
    from prompts.neighbours import NeighbourVote, read_labelled, write_labelled
    from prompts.tasks.classify import as_vote

    rows = labelled_rows()
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_labelled(a, rows)
    write_labelled(b, rows)
    assert a.read_bytes() == b.read_bytes() and read_labelled(a) == rows  # same rows, same bytes
    vote = NeighbourVote(rows)
    assert vote.without() is vote
    assert [r.title for r in vote.without(["LEVI'S 501 JEANS W34 L32"], ["g1"]).rows] == ["Wrangler relaxed fit jeans"]
    assert as_vote("none", tree) is None
    assert len(as_vote(str(a), tree).rows) == 4
    jsonl = tmp_path / "c.jsonl.gz"
    write_labelled(jsonl, [rows[0].__class__("Garden hose", ("Outdoor", "Hoses"))])
    with pytest.raises(ValueError, match="c.jsonl.gz: none of its categories is a path of the taxonomy"):
        as_vote(str(jsonl), tree)


def test_a_decoded_level_takes_the_votes_favourite_only_where_it_wins_with_nothing_from_the_model(scripted, tree):
    """A backend that cannot score decodes each level under a choice constraint: one answer with its probability.
    The vote's favourite replaces it where ``w * vote`` beats ``(1 - w) * p + w * vote(answer)``."""
    import math

    from engine.types import Completion
    from prompts.neighbours import NeighbourVote

    def script(p_first):
        def answer(req, call):
            opts = req.prompt[-1]["content"].split("Choose one: ")[1].split(" | ")
            return Completion(text=opts[0], finish_reason="stop", logprobs=[(opts[0], math.log(p_first))])
        return answer

    vote = NeighbourVote(labelled_rows())
    task = Classify(taxonomy=tree, vote=vote, vote_weight=0.8)
    [unsure] = classify_many(scripted(script(0.5)), task, [PRODUCTS[2]])  # the model's first choice at p=0.5
    assert unsure.path == list(SKILLETS)  # Home (voted for), Kitchen (voted for), then Skillets over Mugs
    [sure] = classify_many(scripted(script(0.999)), Classify(taxonomy=tree, vote=vote, vote_weight=0.2), [PRODUCTS[2]])
    assert sure.path == ["Home", "Kitchen", "Mugs"]  # a weak vote does not overturn a sure model
