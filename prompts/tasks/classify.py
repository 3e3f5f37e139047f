"""classify: product text -> a path in a category taxonomy, decoded level by level.

At each level the choices are the children of the node chosen so far, so the answer is always a
real path. With a backend that can score answers (transformers), every choice is scored and the
probabilities (softmax over the choices' log-likelihoods) give the confidence, the top-k
alternatives and ``needs_review``. Other backends decode under a choice constraint and the
confidence comes from the chosen tokens' log-probabilities (no alternatives then).

Beside the model, the nearest labelled titles vote (``prompts.neighbours``): at a scored level the choice
probabilities become ``(1 - w) * model + w * vote``, where ``w`` is ``vote_weight`` times how close the nearest labelled
title is (0 for a product unlike all of them); at a decoded level the vote's favourite replaces the answer only where
it wins even with no probability from the model (``voted_answer``). facet ships 32,554 PriceRunner and OA-Mine titles
on Shopify's paths for this, those the classification adapter's training titles were drawn from
(engine/shipped/classify); ``--neighbours FILE`` gives a catalogue's own, ``--neighbours none`` leaves the model alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from engine.errors import ParseError
from engine.runner import RunStats, can_score, score_options, softmax
from engine.types import Choice, Completion, Request
from prompts.examples import Example, ExamplePool
from prompts.neighbours import NeighbourVote, read_labelled
from prompts.render import render_messages
from prompts.tasks.base import Rendered, Setup, TaskDef, as_product, option, template_option
from schemas import ErrorRecord, Product
from schemas.taxonomy import SEP, ClassificationResult, Taxonomy


def labelled_pool(items: list[tuple[Product, tuple[str, ...]]]) -> ExamplePool:
    """Demonstrations for classification: products with their gold category path."""
    return ExamplePool([Example(p.model_copy(update={"category": None}), {"category": SEP.join(path)})
                        for p, path in items])


@dataclass(frozen=True)
class Classify:
    taxonomy: Taxonomy
    name: str = "classify"
    template: str = "classify.j2"
    examples: ExamplePool | None = None
    shots: int = 3
    top_k: int = 3
    review_below: float = 0.5
    max_scored_choices: int = 64  # beyond this a level is decoded under a choice constraint instead
    # divide choice probabilities by those for a content-free input (Zhao et al. 2021). Off by default:
    # on 30 PriceRunner titles it did not help zero-shot (0.23 -> 0.23) and hurt 3-shot (0.90 -> 0.67); with the
    # classification adapter shipped before the all-layer one (r=32, top 10 layers), 200 titles: 0.840 -> 0.260
    # (docs/benchmarks.md; not re-measured with the all-layer adapter)
    calibrate: bool = False
    max_input_chars: int = 1000
    # levels scored per product while searching best-first for the most probable path (0: greedy, one choice per
    # level; see classify_many)
    search: int = 0
    adapter: str | None = None
    vote: NeighbourVote | None = None  # labelled titles whose nearest neighbours vote beside the model
    # the vote's share at most (for a product as close to a labelled title as counts); 0.7: the best of 0, 0.3, 0.5,
    # 0.7, 0.9 on 200 PriceRunner and 150 OA-Mine training titles held out of the vote (scripts/tune_vote.py)
    vote_weight: float = 0.7

    def messages(self, product: Product, path: tuple[str, ...] = (), content_free: bool = False) -> list:
        """The prompt for one level. ``content_free``: the same prompt (same demonstrations) with the
        product replaced by "N/A", used to calibrate away the model's bias towards some choices."""
        product = product.model_copy(update={"title": product.title[: self.max_input_chars],
                                             "description": (product.description or "")[: self.max_input_chars]
                                             or None, "category": None})
        options = self.taxonomy.children(path)
        demos = []
        for ex in self.examples.select(product, self.shots * 3) if self.examples else []:
            ex_path = tuple(ex.output["category"].split(SEP))
            if ex_path[: len(path)] == path and len(ex_path) > len(path) and ex_path[len(path)] in options:
                demos.append({"product": ex.product, "path": list(path), "answer": ex_path[len(path)]})
        if content_free:
            product = Product(id=product.id, title="N/A")
        return render_messages(self.template, product=product, path=list(path), options=options,
                               examples=demos[-self.shots :] if self.shots else [])

    def build(self, item: tuple[Product, tuple[str, ...]]) -> Request:
        product, path = item
        options = tuple(self.taxonomy.children(path))
        return Request(prompt=tuple(self.messages(product, path)), constraint=Choice(options),
                       max_new_tokens=64, adapter=self.adapter, want_logprobs=True)

    def parse(self, completion: Completion, item) -> tuple[str, float]:
        _product, path = item
        answer = completion.text.strip()
        if answer not in self.taxonomy.children(path):
            raise ParseError(self.name, completion.text, f"{answer!r} is not a category under {SEP.join(path) or 'the root'}")
        lp = sum(x for _, x in completion.logprobs or ())
        return answer, math.exp(lp)


def classify_many(backend, task: Classify, products: list[Product], stats: RunStats | None = None,
                  retries: int = 1) -> list[ClassificationResult | ErrorRecord]:
    """Classify products level by level; results in input order, an ErrorRecord per failed item.

    With ``task.search`` > 0 the most probable path is searched best-first: a path's probability is the product of
    its levels' choice probabilities, so no child is more probable than its parent; each round scores, for every
    product, the level under its most probable open path, and a product is done when that path is a leaf (then
    no other path can be more probable). ``task.search`` bounds the levels scored per product that way; once spent
    (and always with ``search=0``) the product goes greedily down from its most probable open path, one choice
    per level. A level decoded under a choice constraint (too many choices, or a backend that cannot score) opens
    only its answer.
    """
    import heapq

    from engine.runner import run_task

    stats = stats if stats is not None else RunStats()
    is_leaf = task.taxonomy.is_leaf
    open_: dict[int, list[tuple[float, tuple[str, ...]]]] = {i: [(-1.0, ())] for i in range(len(products))}
    leaves: dict[int, dict[tuple[str, ...], float]] = {i: {} for i in range(len(products))}  # for alternatives
    levels = dict.fromkeys(open_, 0)
    results: dict[int, ClassificationResult | ErrorRecord] = {}
    scorable = can_score(backend)
    near = (task.vote.neighbours([p.title[: task.max_input_chars] for p in products])
            if task.vote is not None and task.vote_weight > 0 else None)

    def opened(i: int, path: tuple[str, ...], p: float, ranked: list[tuple[str, float]], wide: bool) -> None:
        """Open the children of ``path`` (``ranked``, best first): all of them when ``wide``, else only the best."""
        for k, (o, q) in enumerate(ranked):
            child = (*path, o)
            if is_leaf(child):
                leaves[i][child] = p * q
            if wide or k == 0:
                heapq.heappush(open_[i], (-p * q, child))

    while open_:
        expand: dict[int, tuple[tuple[str, ...], float, bool]] = {}  # product -> (path, its probability, wide)
        for i in list(open_):
            neg, path = heapq.heappop(open_[i])
            if is_leaf(path):
                del open_[i]
                p = -neg
                alts = sorted(((SEP.join(n), q) for n, q in leaves[i].items() if q <= p), key=lambda x: -x[1])
                results[i] = ClassificationResult(
                    id=products[i].id, path=list(path), label=path[-1], confidence=p,
                    alternatives=alts[: task.top_k] or [(SEP.join(path), p)], needs_review=p < task.review_below)
                continue
            wide = levels[i] < task.search
            levels[i] += 1
            if not wide:  # greedy from here on: only complete paths stay open beside this one
                open_[i] = [x for x in open_[i] if is_leaf(x[1])]
                heapq.heapify(open_[i])
            expand[i] = (path, -neg, wide)
        scored = [i for i, (path, _, _) in expand.items()
                  if scorable and len(task.taxonomy.children(path)) <= task.max_scored_choices]
        scored_set = set(scored)
        decoded = [i for i in expand if i not in scored_set]
        if scored:
            questions = [(tuple(task.messages(products[i], expand[i][0])), task.taxonomy.children(expand[i][0]))
                         for i in scored]
            free_of: dict[int, int] = {}  # item -> its content-free question
            if task.calibrate:
                free_at: dict[str, int] = {}
                for i in scored:
                    free = tuple(task.messages(products[i], expand[i][0], content_free=True))
                    key = json.dumps(free)
                    if key not in free_at:  # zero-shot: one content-free prompt per taxonomy node
                        free_at[key] = len(questions)
                        questions.append((free, task.taxonomy.children(expand[i][0])))
                    free_of[i] = free_at[key]
            scores = score_options(backend, questions, task.adapter, stats)
            for n, i in enumerate(scored):
                opts, lp = questions[n][1], scores[n]
                if i in free_of:
                    lp = [a - b for a, b in zip(lp, scores[free_of[i]], strict=True)]
                path, p, wide = expand[i]
                probs = softmax(lp)
                if near is not None:
                    probs = voted(task, near[i], path, opts, probs)
                opened(i, path, p, sorted(zip(opts, probs, strict=True), key=lambda x: -x[1]), wide)
        if decoded:
            level = RunStats()
            outs = run_task(backend, task, [(products[i], expand[i][0]) for i in decoded], retries=retries,
                            stats=level)
            stats.merge(level)
            for i, out in zip(decoded, outs, strict=True):
                if isinstance(out, ErrorRecord):
                    results[i] = out.model_copy(update={"id": products[i].id})
                    del open_[i]
                else:
                    path, p, wide = expand[i]
                    if near is not None:
                        out = voted_answer(task, near[i], path, task.taxonomy.children(path), *out)
                    opened(i, path, p, [out], wide)
    out = [results[i] for i in range(len(products))]
    stats.done += sum(1 for r in out if r.ok)
    stats.failed += sum(1 for r in out if not r.ok)
    return out


def voted(task: Classify, near, path: tuple[str, ...], options, probs: list[float]) -> list[float]:
    """The model's choice probabilities mixed with the neighbours' vote: ``(1 - w) * model + w * vote``."""
    shares = task.vote.shares(near, path, options)
    w = task.vote_weight * task.vote.weight(near)
    if shares is None or w <= 0:
        return probs
    return [(1 - w) * p + w * v for p, v in zip(probs, shares, strict=True)]


def voted_answer(task: Classify, near, path: tuple[str, ...], options, answer: str, p: float) -> tuple[str, float]:
    """A decoded level (one answer and its probability ``p``, the others' unknown) mixed with the neighbours' vote:
    the answer scores ``(1 - w) * p + w * vote(answer)``; the vote's favourite replaces it only where it scores more
    even if the model gave it nothing, ``w * vote(favourite)``."""
    shares = task.vote.shares(near, path, options)
    w = task.vote_weight * task.vote.weight(near)
    if shares is None or w <= 0:
        return answer, p
    votes = dict(zip(options, shares, strict=True))
    kept, favourite = (1 - w) * p + w * votes.get(answer, 0.0), max(votes, key=votes.get)
    return (favourite, w * votes[favourite]) if w * votes[favourite] > kept else (answer, kept)


# -- the registered task ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifyOptions:
    taxonomy: object = option(None, "categories: Shopify categories.txt, a text file of 'Parent > Child' paths, or "
                              "JSON (list or nested object), e.g. examples/taxonomy.json; default: Shopify's product "
                              "taxonomy (categories.txt of $FACET_SHOPIFY_TAXONOMY, else shared/data/shopify-taxonomy "
                              "beside the checkout; the shipped adapter was trained on it)", metavar="FILE")
    examples: object = option(None, "labelled demonstrations: JSONL {title, category} or PriceRunner-style CSV",
                              metavar="FILE")
    shots: int = option(Classify.shots, "demonstrations per product")
    template: str = template_option(Classify.template)
    top_k: int = option(Classify.top_k, "alternatives to return with their probabilities")
    review_below: float = option(Classify.review_below, "flag needs_review when the path's probability is below "
                                 "this")
    calibrate: bool = option(Classify.calibrate, "contextual calibration against a content-free input (off: it hurt "
                             "few-shot accuracy here, and the earlier shipped adapter's: PriceRunner 0.840 -> 0.260)")
    max_input_chars: int = option(Classify.max_input_chars, "truncate title+description beyond this")
    search: int = option(Classify.search, "levels scored per product while searching best-first for the most "
                         "probable path, not only the greedy one (0: greedy, one choice per level)")
    neighbours: object = option(None, "labelled titles whose nearest neighbours vote beside the model: JSONL {title, "
                                "category} (.jsonl or .jsonl.gz) or PriceRunner-style CSV; default: the 32,554 "
                                "PriceRunner and OA-Mine titles facet ships, where their paths are in the taxonomy; "
                                "'none': the model alone", metavar="FILE|none")
    vote_weight: float = option(Classify.vote_weight, "the neighbours' share of the choice probabilities at most "
                                "(reached when the nearest labelled title is close; 0: the model alone)")


_TAXONOMIES: dict[str, Taxonomy] = {}


def as_taxonomy(taxonomy) -> Taxonomy:
    """A Taxonomy from a file, a list of labels or paths, a Taxonomy, or None (Shopify's, loaded once)."""
    from pathlib import Path

    from schemas.taxonomy import shopify_taxonomy_file

    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if isinstance(taxonomy, (list, tuple)):
        return Taxonomy.from_labels(taxonomy)
    path = str(taxonomy if taxonomy is not None else shopify_taxonomy_file())
    if path not in _TAXONOMIES:
        _TAXONOMIES.clear()
        _TAXONOMIES[path] = Taxonomy.load(Path(path))
    return _TAXONOMIES[path]


def as_labelled_pool(examples) -> ExamplePool | None:
    """Demonstrations from a file (JSONL {title, category} or PriceRunner CSV), (product, path) pairs, or a pool."""
    from pathlib import Path

    from prompts.formats import read_classification_gold

    if examples is None or isinstance(examples, ExamplePool):
        return examples
    if isinstance(examples, (str, Path)):
        return labelled_pool([(r.product, r.path) for r in read_classification_gold(examples)])
    return labelled_pool([(as_product(p, i), tuple(path.split(" > ")) if isinstance(path, str) else tuple(path))
                          for i, (p, path) in enumerate(examples)])


_VOTES: dict[tuple[str, str, int], NeighbourVote | None] = {}


def as_vote(neighbours, taxonomy: Taxonomy) -> NeighbourVote | None:
    """The neighbour vote for ``--neighbours``: None (the shipped titles, those of them whose paths are in
    ``taxonomy``; no vote when none is or facet ships none), "none", a file, or a NeighbourVote. Loaded once."""
    from pathlib import Path

    from engine.adapters import SHIPPED_LABELLED

    if isinstance(neighbours, NeighbourVote) or (isinstance(neighbours, str) and neighbours.lower() == "none"):
        return neighbours if isinstance(neighbours, NeighbourVote) else None
    shipped = neighbours is None
    path = SHIPPED_LABELLED if shipped else Path(neighbours)
    if shipped and not path.is_file():
        return None
    key = (str(path), taxonomy.name, len(taxonomy))
    if key not in _VOTES:
        known = set(taxonomy.paths)
        rows = [r for r in read_labelled(path) if r.path in known]
        vote = NeighbourVote(rows, name=str(path)) if rows else None
        if vote is None and not shipped:
            raise ValueError(f"{path}: none of its categories is a path of the taxonomy ({taxonomy.name}); "
                             "write them as in the taxonomy, 'Parent > Child'")
        _VOTES.clear()
        _VOTES[key] = vote
    return _VOTES[key]


def build_classify(opts: ClassifyOptions, setup: Setup) -> Classify:
    taxonomy = as_taxonomy(opts.taxonomy)
    return Classify(taxonomy=taxonomy, examples=as_labelled_pool(opts.examples), shots=opts.shots,
                    top_k=opts.top_k, review_below=opts.review_below, template=opts.template,
                    max_input_chars=opts.max_input_chars, calibrate=opts.calibrate, search=opts.search,
                    adapter=setup.adapter_name, vote=as_vote(opts.neighbours, taxonomy), vote_weight=opts.vote_weight)


def render_classify(task: Classify, product: Product) -> Rendered:
    return Rendered(task.messages(product), "# output constraint (one of):\n" + " | ".join(task.taxonomy.children(())))


TASK = TaskDef(
    name="classify", help="assign products to categories of a taxonomy (level by level)",
    description="Classify products into a taxonomy. Each level chooses among the children of the node chosen so far, "
    "so answers are always real paths; each result has a confidence, top-k alternatives and a needs_review flag.",
    epilog="examples:\n  facet classify examples/products.jsonl --taxonomy examples/taxonomy.json\n"
    "  facet classify products.jsonl --taxonomy ../shared/data/shopify-taxonomy/categories.txt -o cats.jsonl\n"
    "  facet classify products.jsonl --taxonomy t.json --examples labelled.jsonl --shots 3   # demos: {title, "
    "category}", options=ClassifyOptions, build=build_classify, render=render_classify, batch="batch",
    run=lambda backend, task, items, stats, state=None: classify_many(backend, task, items, stats=stats),
)
