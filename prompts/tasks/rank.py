"""rank: order a product's attributes by importance to a shopper (a search query, their behaviour).

The answer can only be a permutation of the given names: with a backend that scores answers
(transformers) every name is scored as the answer to "which attribute matters most?" and the names are
sorted by probability (softmax over the names' log-likelihoods = the model's weights, summing to 1);
otherwise the order is decoded one pick per round under a choice constraint over the names not yet
ranked, and the weights come from the picks' probabilities by stick-breaking
(w_k = p_k * prod_{j<k} (1 - p_j), the last name takes what is left).

Then two steps, each keeping the weights summing to 1:

* query understanding (:mod:`prompts.tasks.query`): each phrase of the search is attributed to the attribute it
  expresses (the record's value, a measure, a taxonomy value, the name; the model where several fit), and
  each attribute gets the share e_a of the search that speaks of it: w_a = (p_a + e_a) / (1 + sum e), which puts
  an attribute the search plainly asks for above every other one, in the model's order among themselves;
* behaviour events move the weights by the rule in :mod:`engine.behaviour`.

The final order is by final weight. Reasons are ``evidence`` (default: what the query named, the model's
weight, the behaviour share; all true by construction) or ``model`` (decoded by the model as a JSON object
whose keys are exactly the ranked names; a 135M model's reasons are often wrong, so not the default).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

from engine.behaviour import Behaviour
from engine.errors import ParseError, json_object_answer
from engine.runner import RunStats, can_score, run_task, score_options, softmax
from engine.types import Choice, Completion, JsonSchema, Request
from prompts.render import render_messages
from prompts.tasks.base import Rendered, Setup, TaskDef, option, template_option
from prompts.tasks.extract import clip_product
from schemas import ErrorRecord, Product
from schemas.ranking import RankedAttribute, RankingResult, RankRequest

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class RankExample:
    """A demonstration: a product, a query, the names offered, and the name that matters most."""

    request: RankRequest
    answer: str

    @cached_property
    def words(self) -> frozenset[str]:  # computed once: demos() compares every request with every example
        return _words(self.request)

    @classmethod
    def from_record(cls, rec: dict, line: int = 0) -> RankExample:
        rec = dict(rec)
        answer = rec.pop("answer", None) or (rec.pop("relevant", None) or [None])[0]
        rec.setdefault("id", f"example-{line}")
        req = RankRequest.from_record(rec)
        if answer not in req.names:
            raise ValueError(f"rank example line {line}: 'answer' must be one of its attributes {list(req.names)}")
        return cls(req, answer)


def load_rank_examples(path) -> tuple[RankExample, ...]:

    from engine.io import read_jsonl

    out = []
    for n, rec in read_jsonl(path):
        try:
            out.append(RankExample.from_record(rec, n))
        except ValueError as exc:
            raise ValueError(f"{path}: line {n}: {exc}") from None
    if not out:
        raise ValueError(f"{path}: no rank examples found")
    return tuple(out)


def _words(req: RankRequest) -> frozenset[str]:
    return frozenset(w.casefold() for w in _WORD.findall(f"{req.product.title} {req.query or ''}"))


@dataclass(frozen=True)
class Rank:
    name: str = "rank"
    template: str = "rank.j2"
    examples: tuple[RankExample, ...] = ()
    shots: int = 3
    reasons: str = "evidence"  # "evidence", "model" or "none"
    reason_chars: int = 60
    max_input_chars: int = 1000
    adapter: str | None = None
    read_unmatched: bool = False  # ask the model about search phrases no rule attributes (measured: see docs)

    def demos(self, req: RankRequest) -> list[dict]:
        """The ``shots`` examples most like this request (word overlap of title + query), never one about a
        product with the same title (its own answer); most similar last."""
        target = _words(req)

        def score(ex: RankExample) -> float:
            w = ex.words
            return len(target & w) / (len(target | w) or 1)

        own = req.product.title.casefold()
        pool = [ex for ex in self.examples if ex.request.product.title.casefold() != own]
        chosen = sorted(pool, key=score, reverse=True)[: self.shots] if self.shots > 0 else []
        return [{"product": ex.request.product, "query": ex.request.query, "options": list(ex.request.names),
                 "answer": ex.answer} for ex in chosen[::-1]]

    def messages(self, req: RankRequest, ranked: tuple[str, ...] = (), mode: str = "top") -> list:
        product, _ = clip_product(req.product, self.max_input_chars)
        if mode == "reasons":
            return render_messages(self.template, product=product, query=req.query, options=list(ranked),
                                   ranked=[], mode=mode, examples=[])
        options = [n for n in req.names if n not in ranked]
        return render_messages(self.template, product=product, query=req.query, options=options,
                               ranked=list(ranked), mode="top", examples=self.demos(req))

    # one pick (decoded path): item = (request, names ranked so far)
    def build(self, item: tuple[RankRequest, tuple[str, ...]]) -> Request:
        req, ranked = item
        options = tuple(n for n in req.names if n not in ranked)
        return Request(prompt=tuple(self.messages(req, ranked)), constraint=Choice(options), max_new_tokens=64,
                       adapter=self.adapter, want_logprobs=True)

    def parse(self, completion: Completion, item) -> tuple[str, float]:
        req, ranked = item
        answer = completion.text.strip()
        if answer not in req.names or answer in ranked:
            raise ParseError(self.name, completion.text, f"{answer!r} is not one of the attributes left to rank")
        return answer, min(1.0, math.exp(sum(x for _, x in completion.logprobs or ())))


@dataclass(frozen=True)
class _Reasons:
    """The reasons pass: one JSON object per product, keys = the ranked names in order."""

    task: Rank
    name: str = "rank"

    def schema(self, order: tuple[str, ...]) -> dict:
        props = {n: {"type": "string", "maxLength": self.task.reason_chars} for n in order}
        return {"type": "object", "properties": props, "required": list(order), "additionalProperties": False}

    def build(self, item: tuple[RankRequest, tuple[str, ...]]) -> Request:
        req, order = item
        return Request(prompt=tuple(self.task.messages(req, order, mode="reasons")),
                       constraint=JsonSchema(self.schema(order)),
                       max_new_tokens=min(1024, 16 + len(order) * (8 + self.task.reason_chars // 2)),
                       adapter=self.task.adapter)

    def parse(self, completion: Completion, item) -> dict[str, str]:
        data = json_object_answer(self.name, completion)
        _req, order = item
        missing = [n for n in order if not isinstance(data.get(n), str)]
        if missing:
            raise ParseError(self.name, completion.text, f"no reason for {missing}")
        return {n: data[n].strip() for n in order}


def model_weights(backend, task: Rank, reqs: list[RankRequest], stats: RunStats, retries: int = 1
                  ) -> list[dict[str, float] | ErrorRecord]:
    """The model's weights per request (name -> weight, in the model's order, summing to 1)."""
    if can_score(backend):
        scores = score_options(backend, [(tuple(task.messages(r)), r.names) for r in reqs], task.adapter, stats)
        return [dict(sorted(zip(r.names, softmax(lp), strict=True), key=lambda x: -x[1])) for r, lp in zip(reqs, scores, strict=True)]
    # decoded: one pick per round under a choice constraint over the names left
    picks: dict[int, dict[str, float]] = {i: {} for i in range(len(reqs))}
    rest = {i: 1.0 for i in range(len(reqs))}
    failed: dict[int, ErrorRecord] = {}
    while True:
        todo = [i for i in picks if i not in failed and len(reqs[i].names) - len(picks[i]) > 1]
        if not todo:
            break
        level = RunStats()
        outs = run_task(backend, task, [(reqs[i], tuple(picks[i])) for i in todo], retries=retries, stats=level)
        stats.merge(level)
        for i, res in zip(todo, outs, strict=True):
            if isinstance(res, ErrorRecord):
                failed[i] = res.model_copy(update={"id": reqs[i].product.id})
                continue
            name, p = res
            picks[i][name] = p * rest[i]
            rest[i] *= 1.0 - p
    out: list[dict[str, float] | ErrorRecord] = []
    for i, req in enumerate(reqs):
        if i in failed:
            out.append(failed[i])
            continue
        last = [n for n in req.names if n not in picks[i]]
        out.append({**picks[i], **{n: rest[i] for n in last}})
    return out


def phrase_chooser(backend, task: Rank, stats: RunStats):
    """The model's choice among the attributes a phrase fits: each candidate scored as the answer to the ranking
    prompt with the phrase (and the product's category) as the search, the question the shipped adapter was
    trained on. None when the backend cannot score (the phrase is then shared evenly)."""
    if not can_score(backend):
        return None

    def choose(asks):
        questions = []
        for req, phrase in asks:
            leaf = (req.product.category or req.product.title).split(" > ")[-1]
            sub = RankRequest(product=req.product, names=phrase.candidates, query=f"{phrase.text} {leaf}".lower())
            questions.append((tuple(task.messages(sub)), phrase.candidates))
        return [softmax(lp) for lp in score_options(backend, questions, task.adapter, stats)]

    return choose


def understanding_of(backend, task: Rank, reqs: list[RankRequest], stats: RunStats | None = None):
    """:class:`prompts.tasks.query.QueryUnderstanding` per request, the model deciding ambiguous phrases."""
    from prompts.tasks.query import understand_many

    return understand_many(reqs, phrase_chooser(backend, task, stats if stats is not None else RunStats()),
                           unmatched=task.read_unmatched)


def _evidence_reason(r: RankedAttribute, res: RankingResult, search: str | None = None) -> str:
    parts = []
    if search:
        parts.append(search)
    parts.append(f"model weight {r.model_weight:.0%}")
    if r.behaviour_share is not None:
        who = f"user {res.user}" if res.user else f"segment {res.segment}"
        parts.append(f"{r.behaviour_share:.0%} of {who}'s recent interest here")
    return "; ".join(parts)


def rank_many(backend, task: Rank, reqs: list[RankRequest], behaviour: Behaviour | None = None,
              stats: RunStats | None = None, retries: int = 1) -> list[RankingResult | ErrorRecord]:
    """Rank each request's attributes; results in input order, an ErrorRecord per failed item."""
    from schemas.ranking import QueryPhrase

    stats = stats if stats is not None else RunStats()
    results: list[RankingResult | ErrorRecord] = []
    priors = model_weights(backend, task, reqs, stats, retries)
    for req, prior, seen in zip(reqs, priors, understanding_of(backend, task, reqs, stats), strict=True):
        if isinstance(prior, ErrorRecord):
            results.append(prior)
            continue
        share = seen.mass()
        evidence = seen.evidence()
        named = {n: ", ".join(p.text for p in ps) for n, ps in evidence.items()}
        why = {n: "; ".join(p.reason() for p in ps) for n, ps in evidence.items()}
        weights = {n: (p + share.get(n, 0.0)) / (1 + sum(share.values())) for n, p in prior.items()}
        final, shares, mass = (behaviour.blend(weights, req.user, req.segment) if behaviour is not None
                               else (weights, None, 0.0))
        model_order = {n: k for k, n in enumerate(prior)}
        order = sorted(final, key=lambda n: (-final[n], model_order[n]))
        res = RankingResult(
            id=req.product.id, query=req.query, user=req.user, segment=req.segment, events_used=mass,
            warnings=clip_product(req.product, task.max_input_chars)[1],
            phrases=[QueryPhrase(text=p.text, attribute=p.attribute, probability=p.probability, evidence=p.evidence)
                     for p in seen.phrases],
            ranking=[RankedAttribute(name=n, weight=final[n], model_weight=prior[n], query_match=named.get(n),
                                     query_share=share.get(n, 0.0), behaviour_share=shares[n] if shares else None)
                     for n in order])
        if task.reasons == "evidence":
            for r in res.ranking:
                r.reason = _evidence_reason(r, res, why.get(r.name))
        results.append(res)
    if task.reasons == "model":
        ok = [i for i, r in enumerate(results) if r.ok]
        level = RunStats()
        outs = run_task(backend, _Reasons(task), [(reqs[i], tuple(results[i].order())) for i in ok],
                        retries=retries, stats=level)
        stats.merge(level)
        for i, why in zip(ok, outs, strict=True):
            if isinstance(why, ErrorRecord):
                results[i].warnings.append(f"no reasons: {why.error}")
                continue
            for r in results[i].ranking:
                r.reason = why[r.name]
    stats.done += sum(1 for r in results if r.ok)
    stats.failed += sum(1 for r in results if not r.ok)
    return results


def as_request(item, index: int = 0, **context) -> RankRequest:
    """A RankRequest from a RankRequest, a record dict (product fields + rank/query/user/segment) or a Product."""
    if isinstance(item, RankRequest):
        return item.model_copy(update={k: v for k, v in context.items() if v is not None})
    if isinstance(item, Product):
        return RankRequest(product=item, **{k: v for k, v in context.items() if v is not None})
    if isinstance(item, dict):
        rec = {"id": str(index), **item}
        for k, v in context.items():
            if v is not None:
                rec.setdefault(k, v)
        return RankRequest.from_record(rec)
    raise TypeError(f"expected a RankRequest, Product or dict, got {type(item).__name__}")


# -- the registered task ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RankOptions:
    query: str | None = option(None, "the shopper's search, for records without their own 'query'", type=str)
    user: str | None = option(None, "whose behaviour to blend in, for records without their own 'user'", type=str)
    segment: str | None = option(None, "the user's segment, for records without their own 'segment'", type=str)
    events: object = option(None, "behaviour events (view/click/add_to_cart/purchase), applied in order; events for "
                            "products not in INPUT become error records", metavar="JSONL")
    strength: float = option(Behaviour.strength, "how many event-weights the model's prior counts for (purchase = 8, "
                             "view = 1)")
    half_life: float = option(Behaviour.half_life, "events after which old behaviour counts half")
    segment_weight: float = option(Behaviour.segment_weight, "weight of the segment's behaviour beside the user's "
                                   "own")
    behaviour: object = option(None, "a Behaviour fed with events (Python API)", cli=False)
    examples: object = option(None, "demonstrations: records as above plus \"answer\": the attribute that matters "
                              "most", metavar="FILE")
    shots: int = option(Rank.shots, "demonstrations per product")
    template: str = template_option(Rank.template)
    max_input_chars: int = option(Rank.max_input_chars, "truncate title+description beyond this")
    reasons: str = option(Rank.reasons, "'evidence': what the search named, the model's weight, the behaviour share; "
                          "'model': a reason written by the model (slower, and a small model's are often wrong)",
                          choices=("evidence", "model", "none"))
    read_unmatched: bool = option(Rank.read_unmatched, "also let the model attribute search words that no rule "
                                  "matches (values the taxonomy does not list); off by default, see docs/benchmarks.md")


def build_rank(opts: RankOptions, setup: Setup) -> Rank:
    from pathlib import Path

    examples = load_rank_examples(opts.examples) if isinstance(opts.examples, (str, Path)) else opts.examples
    return Rank(examples=tuple(examples or ()), shots=opts.shots, reasons=opts.reasons, template=opts.template,
                max_input_chars=opts.max_input_chars, adapter=setup.adapter_name, read_unmatched=opts.read_unmatched)


def rank_item(opts: RankOptions, record, index: int = 0) -> RankRequest:
    return as_request(record, index, query=opts.query, user=opts.user, segment=opts.segment)


def prepare_rank(opts: RankOptions, items: list[RankRequest] | None, setup: Setup) -> tuple[Behaviour, list]:
    """The behaviour to blend in: ``behaviour``, else one fed with ``events`` (error records for the events that
    could not be applied)."""
    from engine.behaviour import read_events
    from engine.errors import InputError

    if opts.behaviour is not None:
        return opts.behaviour, []
    behaviour = Behaviour(strength=opts.strength, half_life=opts.half_life, segment_weight=opts.segment_weight)
    errors = []
    if not opts.events:
        return behaviour, errors
    if items is None:
        raise ValueError("facet rank --events needs every record in one process; run it without --ray")
    names = {req.product.id: req.names for req in items}
    for number, ev in read_events(opts.events):
        try:
            if isinstance(ev, InputError):
                raise ev
            behaviour.update(ev, names.get(ev.product))
        except InputError as exc:
            errors.append(ErrorRecord(id=f"events:{number}", task="rank", error=f"{opts.events} line {number}: "
                                      f"{exc.reason}"))
    setup.note(f"{behaviour.events} events applied from {opts.events}, {len(errors)} rejected")
    return behaviour, errors


def render_rank(task: Rank, req: RankRequest) -> Rendered:
    return Rendered(task.messages(req), "# output constraint (one of; scored, or decoded one pick at a time):\n"
                    + " | ".join(req.names))  # the first pick ("which matters most?")


TASK = TaskDef(
    name="rank", help="order each product's attributes by importance to a shopper (query, behaviour)",
    description="Order each product's attributes (its `attributes` keys, or a `rank` list of names) by how much "
    "they matter to the shopper: the model scores every name as the answer to 'which attribute matters most?' (the "
    "output is always a permutation of the given names, weights sum to 1), behaviour events from --events move the "
    "weights by a documented rule (README), and a short reason is decoded for each attribute. A record may carry "
    "its own query, user and segment.",
    epilog="examples:\n  facet rank examples/to_rank.jsonl --query 'blue velvet sofa'\n"
    "  facet rank examples/to_rank.jsonl --events examples/events.jsonl --user u1 -o ranked.jsonl\n"
    "  facet eval rank --data ../shared/data/wands/query.csv --examples ../shared/data/wands/query.csv\n"
    "records: {\"id\": \"p1\", \"title\": \"...\", \"attributes\": {\"Color\": \"blue\", ...}, \"query\": \"...\", "
    "\"user\": \"u1\"}\nevents:  {\"user\": \"u1\", \"segment\": \"s\", \"product\": \"p1\", \"event\": \"click\", "
    "\"attributes\": {\"Color\": \"blue\"}}  (event: view, click, add_to_cart, purchase)",
    options=RankOptions, build=build_rank, render=render_rank, item=rank_item, prepare=prepare_rank, reads="record",
    batch="batch", run=lambda backend, task, items, stats, state=None: rank_many(backend, task, items, state,
                                                                                stats=stats),
)
