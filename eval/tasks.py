"""How each task is scored: one :class:`EvalDef` per `facet eval NAME`, keyed by name in :data:`EVALS` and read by
the CLI's generic eval command. An eval names the registered task it scores (its options are that task's), adds
its own options (a dataclass extending :class:`EvalOptions`), reads its gold data and returns a report (written as
report.json and report.md by the caller)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval import report as md
from prompts.tasks.base import Setup, option


@dataclass(frozen=True)
class EvalOptions:
    data: str | None = option(None, "the gold data", type=str)
    limit: int | None = option(None, "only the first N records (classify: a seeded random sample of N)", type=int)
    seed: int = option(0, "seed of samples and hidden attributes")


@dataclass
class EvalContext:
    """What an eval gets: the task's option values (``task(**override)`` builds the task from them), its own
    options, the backend (loaded on first use), and what goes into the report's provenance."""

    name: str
    values: dict[str, Any]
    options: Any
    setup: Setup
    backend: Callable[[], Any]
    batch_size: int
    prov: dict
    build: Callable[..., Any]

    def task(self, **override):
        return self.build({**self.values, **override})


@dataclass(frozen=True)
class EvalDef:
    name: str
    task: str  # the registered task whose options and prompts are scored
    help: str
    run: Callable[[EvalContext], dict]
    markdown: Callable[[dict], str]
    line: Callable[[dict], str]
    options: type = EvalOptions
    after: Callable[[dict, Path], list[str]] | None = None  # more files beside report.md (their names)


EVALS: dict[str, EvalDef] = {}


def register_eval(ev: EvalDef) -> EvalDef:
    EVALS[ev.name] = ev
    return ev


def _need_data(ctx: EvalContext) -> str:
    if not ctx.options.data:
        raise ValueError(f"facet eval {ctx.name} needs --data FILE (the gold data)")
    return ctx.options.data


def schema_from_train(ctx: EvalContext):
    """Without --attributes: the per-category attribute list of the gold training file (--schema-from, default
    train.jsonl beside --data), or None when there is none."""
    from eval.datasets import read_extraction_gold, schema_from_gold

    if ctx.values.get("attributes"):
        return None
    train = Path(ctx.options.schema_from or Path(_need_data(ctx)).with_name("train.jsonl"))
    if not train.is_file():
        return None
    ctx.setup.note(f"attribute schema per category from {train}")
    return schema_from_gold(read_extraction_gold(train))


# -- extract ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractEvalOptions(EvalOptions):
    data: str | None = option(None, "gold JSONL (OA-Mine / WDC-PAVE); with --spec, WDC-PAVE train.jsonl with "
                              "train_normalized.jsonl beside it (scored end to end)", type=str)
    schema_from: str | None = option(None, "derive the per-category attribute list from this gold file (default: "
                                     "train.jsonl beside --data)", type=str)


def _extract(ctx: EvalContext) -> dict:
    from eval.datasets import normalized_twin
    from eval.harness import evaluate_extraction
    from prompts.tasks.base import options_from
    from prompts.tasks.extract import ExtractOptions, normalize_step

    data = _need_data(ctx)
    normalized = None
    if ctx.values.get("spec"):  # extraction, then normalization of what it found, scored end to end
        normalized = normalized_twin(data)
        if not normalized.is_file():
            raise FileNotFoundError(f"--spec scores extraction + normalization against the normalized gold beside "
                                    f"--data, and {normalized} does not exist (WDC-PAVE: train.jsonl with "
                                    "train_normalized.jsonl)")
    normalize = normalize_step(options_from(ExtractOptions, ctx.values), ctx.setup)
    task = ctx.task(**({"attributes": s} if (s := schema_from_train(ctx)) is not None else {}))
    return evaluate_extraction(ctx.backend(), task, data, limit=ctx.options.limit, batch_size=ctx.batch_size,
                               normalize=normalize, normalized_gold=normalized, **ctx.prov,
                               spec=ctx.values.get("spec"))


def _extract_line(report: dict) -> str:
    out = []
    for label, r in (("", report), ("extract + normalize: ", report.get("end_to_end"))):
        if r is not None:
            s = r["summary"]
            out.append(f"{label}micro-F1 {s['micro_f1']:.3f}  P {s['precision']:.3f}  R {s['recall']:.3f}  macro-F1 "
                       f"{s['macro_f1']:.3f}  failures {s['failures']}/{s['products']}")
    return "\n".join([*out, f"{report['seconds_per_product']:.2f} s/product (extraction)"])


# -- classify -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifyEvalOptions(EvalOptions):
    data: str | None = option(None, "gold: PriceRunner CSV or JSONL {title, category}", type=str)
    label_map: str | None = option(None, "map the data's labels onto --taxonomy paths: 'pricerunner-shopify' "
                                   "(PriceRunner's 10 categories on Shopify's taxonomy), 'oa-mine-shopify' (OA-Mine's "
                                   "10 categories; both built in) or a JSON file {label: 'A > B > C'}", type=str,
                                   metavar="NAME|FILE")


def label_map(spec: str) -> dict[str, tuple[str, ...]]:
    """--label-map: a built-in name (``eval.datasets.LABEL_MAPS``) or a JSON file {label: "A > B > C"}."""
    from eval.datasets import LABEL_MAPS, label_paths

    return LABEL_MAPS[spec] if spec in LABEL_MAPS else label_paths(json.loads(Path(spec).read_text()))


def _classify(ctx: EvalContext) -> dict:
    from eval.datasets import map_class_labels, read_classification_gold, split_by_group
    from eval.harness import evaluate_classification
    from schemas.taxonomy import Taxonomy

    data, opts = _need_data(ctx), ctx.options
    rows = read_classification_gold(data)
    if opts.label_map:
        rows = map_class_labels(rows, label_map(opts.label_map))
    sample, rest = split_by_group(rows, opts.limit, opts.seed)
    override: dict[str, Any] = {}
    if not (ctx.values.get("taxonomy") or opts.label_map):  # labels mapped onto a taxonomy: Shopify's unless given
        override["taxonomy"] = Taxonomy([r.path for r in rows], "labels of data")
    examples = ctx.values.get("examples")
    if examples and Path(examples).resolve() == Path(data).resolve():
        override["examples"] = [(r.product, r.path) for r in rest]  # never a product's own group
        ctx.setup.note(f"demonstrations from the {len(rest)} rows outside the sample and its product groups")
    task = ctx.task(**override)
    if task.vote is not None:  # no evaluated title, nor another offer of its product, votes on itself
        vote = task.vote.without([r.product.title for r in sample], [r.group for r in sample])
        if vote is not task.vote:
            ctx.setup.note(f"neighbour vote: {len(task.vote.rows) - len(vote.rows)} labelled titles left out (evaluated "
                           "titles and their product groups)")
            task = dataclasses.replace(task, vote=vote)
    return evaluate_classification(ctx.backend(), task, data, sample, seed=opts.seed,
                                   batch_size=ctx.batch_size, **{k: v for k, v in ctx.prov.items()
                                                                 if k not in ("examples", "grammar")})


def _confusion(report: dict, out: Path) -> list[str]:
    from eval.report import confusion_png

    confusion_png(report, out / "confusion.png")
    return ["confusion.png"]


def _classify_line(report: dict) -> str:
    s = report["summary"]
    return (f"accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}  failures {s['failures']}/{s['products']}  "
            f"{report['seconds_per_product']:.2f} s/product")


# -- complete -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompleteEvalOptions(EvalOptions):
    data: str | None = option(None, "gold JSONL (OA-Mine / WDC-PAVE): one attribute hidden per product", type=str)
    schema_from: str | None = option(None, "derive the per-category attribute list from this gold file (default: "
                                     "train.jsonl beside --data)", type=str)


def _complete(ctx: EvalContext) -> dict:
    from eval.datasets import read_extraction_gold
    from eval.harness import evaluate_completion

    data = _need_data(ctx)
    task = ctx.task(**({"attributes": s} if (s := schema_from_train(ctx)) is not None else {}))
    rows = read_extraction_gold(data)[: ctx.options.limit]
    return evaluate_completion(ctx.backend(), task, data, rows, seed=ctx.options.seed, batch_size=ctx.batch_size,
                               **{k: v for k, v in ctx.prov.items() if k != "grammar"})


def _complete_line(report: dict) -> str:
    from eval.report import ratio_text as f

    s = report["summary"]
    return (f"fill accuracy {f(s['fill_accuracy'])}  hidden recall {f(s['hidden_recall'])}  abstention precision "
            f"{f(s['abstention_precision'])}  false fills {f(s['false_fill_rate'])}  failures {s['failures']}/"
            f"{s['products']}  {report['seconds_per_product']:.2f} s/product")


# -- normalize ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NormalizeEvalOptions(EvalOptions):
    data: str | None = option(None, "WDC-PAVE train.jsonl with train_normalized.jsonl beside it (--spec default: "
                              "descriptions.csv beside it)", type=str)


def _normalize(ctx: EvalContext) -> dict:
    from eval.datasets import read_normalization_gold
    from eval.harness import evaluate_normalization

    data = _need_data(ctx)
    spec = ctx.values.get("spec")
    if not spec:
        spec = str(Path(data).with_name("descriptions.csv"))
        ctx.setup.note(f"normalization rules from {spec}")
    rows = read_normalization_gold(data)[: ctx.options.limit]
    examples = ctx.values.get("examples")
    if examples and Path(examples).resolve() == Path(data).resolve():
        ctx.setup.note("demonstrations from the other products of the data (never a product's own)")
    from engine.config import LazyBackend

    return evaluate_normalization(LazyBackend(ctx.backend), ctx.task(spec=spec), data, rows,
                                  batch_size=ctx.batch_size, model=ctx.prov["model"],
                                  adapter_path=ctx.prov["adapter_path"], spec=spec)


def _normalize_line(report: dict) -> str:
    s = report["summary"]
    ops = "  ".join(f"{o['operation']} {o['f1']:.3f}" for o in report["operations"])
    return (f"micro-F1 {s['micro_f1']:.3f} over {s['slots']} slots ({ops})  failures {s['failures']}/"
            f"{s['products']}  {report['seconds_per_product']:.2f} s/product")


# -- rank and its query understanding ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RankEvalOptions(EvalOptions):
    data: str | None = option(None, "WANDS query.csv", type=str)
    taxonomy: str | None = option(None, "the Shopify taxonomy folder (default: shopify-taxonomy beside the data's "
                                  "folder)", type=str)


def _rank(ctx: EvalContext) -> dict:
    from eval.datasets import read_rank_gold
    from eval.harness import evaluate_ranking, rank_demos

    data, opts = _need_data(ctx), ctx.options
    all_rows, skipped = read_rank_gold(data, opts.taxonomy)
    override: dict[str, Any] = {"reasons": "none"}  # reasons are not scored
    examples = ctx.values.get("examples")
    if examples and Path(examples).resolve() == Path(data).resolve():
        override["examples"] = rank_demos(all_rows)
        ctx.setup.note("demonstrations from the other queries of the data (never one of the same class)")
    report = evaluate_ranking(ctx.backend(), ctx.task(**override), data, all_rows[: opts.limit],
                              batch_size=ctx.batch_size, seed=opts.seed, model=ctx.prov["model"],
                              adapter_path=ctx.prov["adapter_path"], taxonomy=opts.taxonomy)
    report["skipped"] = dict(skipped)
    return report


def _rank_line(report: dict) -> str:
    s, b = report["summary"], report["baselines"]
    return (f"NDCG@3 {s['ndcg@3']:.3f}  MRR {s['mrr']:.3f}  top-1 {s['top1']:.3f} over {s['cases']} queries "
            f"(given order {b['given order']['ndcg@3']:.3f}/{b['given order']['mrr']:.3f}, random "
            f"{b['random order']['ndcg@3']:.3f}/{b['random order']['mrr']:.3f})  failures {s['failures']}  "
            f"{report['seconds_per_product']:.2f} s/product")


@dataclass(frozen=True)
class QueryEvalOptions(EvalOptions):
    data: str | None = option(None, "hand-labelled searches (default: eval/data/query_attribution.jsonl)", type=str)
    rules_only: bool = option(False, "the rules alone (no model is loaded)")


def _query(ctx: EvalContext) -> dict:
    from eval.datasets import QUERY_ATTRIBUTION, read_query_gold
    from eval.harness import evaluate_query_attribution

    data = ctx.options.data or QUERY_ATTRIBUTION
    rows = read_query_gold(data)[: ctx.options.limit]
    backend = None if ctx.options.rules_only else ctx.backend()
    return evaluate_query_attribution(backend, ctx.task(reasons="none"), data, rows, model=ctx.prov["model"],
                                      adapter_path=ctx.prov["adapter_path"])


def _query_line(report: dict) -> str:
    s = report["summary"]
    return (f"phrase accuracy {s['accuracy']:.3f}  attribute phrases P {s['precision']:.3f} R {s['recall']:.3f} F1 "
            f"{s['f1']:.3f} over {s['phrases']} phrases of {s['queries']} searches  {report['seconds_per_product']:.2f} "
            "s/search")


# the built-in evals, listed explicitly (a user's own joins with register_eval)
EVALS.update({e.name: e for e in (
    EvalDef("extract", "extract", "the published OA-Mine / WDC-PAVE metric: exact-match micro-F1 over gold slots "
            "(eval/metrics.py)", _extract, md.extraction_markdown, _extract_line, ExtractEvalOptions),
    EvalDef("classify", "classify", "accuracy per level and overall, macro-F1, confusion chart", _classify,
            md.classification_markdown, _classify_line, ClassifyEvalOptions, _confusion),
    EvalDef("complete", "complete", "one gold attribute hidden per product: fill accuracy, hidden recall, false "
            "fills", _complete, md.completion_markdown, _complete_line, CompleteEvalOptions),
    EvalDef("normalize", "normalize", "micro-F1 of normalized values (WDC-PAVE)", _normalize,
            md.normalization_markdown, _normalize_line, NormalizeEvalOptions),
    EvalDef("rank", "rank", "NDCG@3 / MRR on WANDS queries against given-order and random baselines", _rank,
            md.ranking_markdown, _rank_line, RankEvalOptions),
    EvalDef("query", "rank", "which phrase of a search goes to which attribute (rank's query understanding), on "
            "hand-labelled searches", _query, md.query_markdown, _query_line, QueryEvalOptions),
)})
