"""The ``facet`` command: one plain function per subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from engine.models import DEFAULT_MODEL

EPILOG = """examples:
  facet extract products.jsonl -o attrs.jsonl                 # zero-shot, open attributes
  facet extract products.jsonl -o attrs.jsonl --resume        # continue a killed run
  facet extract products.jsonl --attributes attrs.json --examples demos.jsonl -o out.jsonl
  facet render products.jsonl --line 3 --examples demos.jsonl # print the exact prompt, no model
  facet eval extract --data ../shared/data/oa-mine/validation.jsonl --examples ../shared/data/oa-mine/train.jsonl
  facet compare zero-shot=runs/zs adapter=runs/adapter -o runs/compare   # side by side, with charts
  facet train extract --train ../shared/data/oa-mine/train.jsonl --val ../shared/data/oa-mine/validation.jsonl -o adapters/extract
  facet extract products.jsonl --backend vllm --adapter adapters/extract --merge-adapter -o out.jsonl
  facet extract offers.jsonl --spec ../shared/data/wdc-pave/descriptions.csv -o out.jsonl   # + normalized values
  facet eval extract --data ../shared/data/wdc-pave/train.jsonl --spec ../shared/data/wdc-pave/descriptions.csv
  facet serve --adapter adapters/extract                       # OpenAI-compatible vLLM server for many clients

input: JSON Lines, one product per line: {"id": "p1", "title": "...", "description": "...", "category": "..."}
       ("input"/"input_title" are accepted for the title). Bad lines become error records; the run goes on.
"""


def _add_task_options(p: argparse.ArgumentParser, model: bool = True) -> None:
    g = p.add_argument_group("prompt")
    g.add_argument("--attributes", metavar="FILE",
                   help="JSON category -> attribute list to ask for (schema-guided). Without it: open extraction")
    g.add_argument("--examples", metavar="JSONL",
                   help="few-shot pool: records with title, category and 'output' (or OA-Mine target_scores)")
    g.add_argument("--shots", type=int, default=3, help="demonstrations per product, chosen by similarity (default 3)")
    g.add_argument("--template", default=None,
                   help="built-in template name or path to your own .j2 (default: the task's, e.g. extract.j2)")
    g.add_argument("--free", action="store_true",
                   help="let values be any string (default: values are constrained to spans of the product text)")
    g.add_argument("--max-input-chars", type=int, default=None,
                   help="truncate title+description beyond this (default: the task's, e.g. 2000 for extract, 1000 "
                   "for rank)")
    if model:
        _add_model_options(p)


def _add_io_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="JSONL products ('-' for stdin)")
    p.add_argument("-o", "--output", default="-", help="JSONL results ('-' for stdout, the default)")
    p.add_argument("--resume", action="store_true", help="skip ids already in OUTPUT and append the rest")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: 'auto' (the one RAY_ADDRESS or `ray "
                   "start` names, else a local one) or an address; INPUT may be a folder or glob, -o is a folder of "
                   "partitions (pip install 'facet[ray]'; see docs/distributed.md)")
    p.add_argument("--workers", type=int, default=2, help="with --ray: actors, each holding one engine (default 2)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL,
                   help="'smollm2-135m' (embedded default), a local HF folder, or a .gguf file")
    m.add_argument("--adapter", metavar="PATH", help="LoRA adapter folder trained with `facet train`; default: the "
                   "adapter facet ships (extract, classify, complete, rank; without --examples, as it was trained; "
                   "'default' forces it); 'none': the base model")
    m.add_argument("--grammar", choices=["llguidance", "xgrammar"], default=None,
                   help="grammar engine for constrained decoding (default: llguidance for transformers, xgrammar for "
                   "vllm, each the faster there; an openai server uses its own)")
    m.add_argument("--batch-size", type=int, default=None,
                   help="products per batch (default: 16 for transformers, 128 for vllm and openai, which batch "
                   "or queue continuously and are faster with more in flight)")
    m.add_argument("--max-new-tokens", type=int, default=None, help="answer budget (default: by attribute count)")
    m.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    m.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="model weights (default float32: fastest on CPU; use bfloat16 on a GPU)")
    m.add_argument("--device", default="auto", help="transformers backend: auto (a CUDA GPU when visible), cpu, cuda")
    m.add_argument("--backend", choices=["transformers", "vllm", "openai"], default="transformers",
                   help="'vllm': the in-process vLLM engine (install with `make setup-vllm`); 'openai': send requests to an OpenAI-compatible server (e.g. vllm serve); --model is then "
                   "the served model name and --adapter NAME must be served as NAME (--lora-modules NAME=PATH)")
    m.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai backend: server URL")
    m.add_argument("--concurrency", type=int, default=None,
                   help="openai backend: requests in flight (default 8; `facet bench` against its own local server: "
                   "64, where more queued past the client's 120 s timeout on this CPU)")
    m.add_argument("--schema-as", choices=["response_format", "grammar"], default="response_format",
                   help="openai backend: how JSON schemas travel. response_format (default): OpenAI's JSON-schema "
                   "response_format, which any compatible server takes; grammar: span schemas as facet's compact "
                   "grammar in vLLM's structured_outputs.grammar, for a vLLM server using xgrammar (`facet serve`'s "
                   "default), which compiles it ~7x faster than the schema")
    m.add_argument("--merge-adapter", action="store_true",
                   help="vllm backend: merge --adapter into the weights once (cached) and serve a plain model; "
                   "on the CPU build ~1.2-1.3x the products/s of LoRA (README)")


def _add_classify_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classification")
    g.add_argument("--taxonomy", metavar="FILE",
                   help="categories: Shopify categories.txt, a text file of 'Parent > Child' paths, or JSON "
                   "(list or nested object), e.g. examples/taxonomy.json; default: Shopify's product taxonomy "
                   "(categories.txt of $FACET_SHOPIFY_TAXONOMY, else shared/data/shopify-taxonomy beside the "
                   "checkout; the shipped adapter was trained on it)")
    g.add_argument("--top-k", type=int, default=3, help="alternatives to return with their probabilities")
    g.add_argument("--review-below", type=float, default=0.5,
                   help="flag needs_review when the path's probability is below this (default 0.5)")
    g.add_argument("--calibrate", action="store_true",
                   help="contextual calibration against a content-free input (off: it hurt few-shot accuracy here)")


def _add_demo_options(p: argparse.ArgumentParser, examples_help: str, template: str):
    """The "prompt" group of a task command: --examples, --shots, --template; returned for more options."""
    g = p.add_argument_group("prompt")
    g.add_argument("--examples", metavar="FILE", help=examples_help)
    g.add_argument("--shots", type=int, default=3, help="demonstrations per product (default 3)")
    g.add_argument("--template", default=None, help=f"default {template}; or a path to your own .j2")
    return g


def _add_rank_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("context and behaviour")
    g.add_argument("--query", help="the shopper's search, for records without their own 'query'")
    g.add_argument("--user", help="whose behaviour to blend in, for records without their own 'user'")
    g.add_argument("--segment", help="the user's segment, for records without their own 'segment'")
    g.add_argument("--events", metavar="JSONL", help="behaviour events (view/click/add_to_cart/purchase), applied in "
                   "order; events for products not in INPUT become error records")
    g.add_argument("--strength", type=float, default=8.0,
                   help="how many event-weights the model's prior counts for (default 8; purchase = 8, view = 1)")
    g.add_argument("--half-life", type=float, default=50.0, help="events after which old behaviour counts half "
                   "(default 50)")
    g.add_argument("--segment-weight", type=float, default=0.5,
                   help="weight of the segment's behaviour beside the user's own (default 0.5)")


def _add_normalize_options(p: argparse.ArgumentParser, spec_required: bool = True, prompt: bool = True) -> None:
    g = p.add_argument_group("normalization")
    g.add_argument("--spec", required=spec_required, metavar="FILE",
                   help="rules per attribute: JSON (see schemas/normalization.py, e.g. examples/normalization.json) "
                   "or a WDC-PAVE descriptions.csv. With `extract`: also normalize the values found (each record gets "
                   "`normalized`); with `eval extract`: and score them end to end against the normalized gold "
                   "beside --data (train_normalized.jsonl)")
    g.add_argument("--aliases", metavar="FILE", help="JSON {alias: canonical attribute name}, added to the spec's")
    g.add_argument("--keep-unknown", action="store_true",
                   help="keep attributes the model maps to no canonical name (default: drop them, recorded)")
    if prompt:
        g.add_argument("--shots", type=int, default=3, help="demonstrations per model question (default 3)")
        g.add_argument("--examples", metavar="FILE", help="demonstrations: JSONL {title, category, attribute, value, "
                       "answer}, or WDC-PAVE train.jsonl with train_normalized.jsonl beside it")


def _clip(args) -> dict:
    """--max-input-chars when given; else each task keeps its own default (one place: the task's dataclass)."""
    n = getattr(args, "max_input_chars", None)
    return {"max_input_chars": n} if n else {}


def _task(args, attribute_schema=None):
    from engine.adapters import prompt_mismatch, trained_attributes
    from prompts.examples import ExamplePool
    from prompts.tasks.extract import Extract
    from schemas import load_attribute_schema

    if attribute_schema is None and getattr(args, "attributes", None):
        attribute_schema = load_attribute_schema(args.attributes)
    adapter = getattr(args, "adapter", None)
    if attribute_schema is None and (trained := trained_attributes(adapter)):
        attribute_schema = load_attribute_schema(trained)  # asked the attributes it was trained on
    examples = ExamplePool.from_jsonl(args.examples) if args.examples else None
    template = args.template or "extract.j2"
    if adapter and (warning := prompt_mismatch(adapter, bool(args.examples), template)):
        print(f"facet: warning: {warning}", file=sys.stderr)
    return Extract(
        template=template, attribute_schema=attribute_schema, examples=examples, shots=args.shots,
        grounded=not args.free, **_clip(args),
        max_new_tokens=getattr(args, "max_new_tokens", None),
        adapter="extract" if getattr(args, "adapter", None) else None,
    )


_BACKENDS: dict = {}  # one backend per configuration and process (a Ray worker reuses it for every batch)


def _backend(args, task: str = "extract"):
    """The backend the options ask for; --adapter is served under the task's name."""
    from engine.config import EngineConfig

    config = EngineConfig(
        model=args.model, grammar=args.grammar, batch_size=args.batch_size, threads=args.threads,
        dtype=args.dtype, device=getattr(args, "device", "auto"), adapters={task: args.adapter} if args.adapter else {},
        backend=getattr(args, "backend", "transformers"), base_url=getattr(args, "base_url", None)
        or "http://127.0.0.1:8000/v1", concurrency=getattr(args, "concurrency", None) or 8,
        api_key=os.environ.get("FACET_API_KEY"), merge_adapter=getattr(args, "merge_adapter", False),
        schema_as=getattr(args, "schema_as", "response_format"),
    )
    key = config.model_dump_json()
    if key not in _BACKENDS:
        from engine.config import load_backend

        _BACKENDS.clear()  # one model in memory at a time
        _BACKENDS[key] = load_backend(config)
    return _BACKENDS[key]


def _run_jsonl(args, task_name: str, process, to_item=None, prepare=None) -> int:
    """Shared by the task commands: read JSONL, skip done ids (--resume), stream results, summarize.

    ``process(items, stats)`` yields one result per item, in order. ``to_item(line)`` turns a valid line into the
    task's item (default: its Product; a ValueError makes it a bad-input record). ``prepare(items)`` sees every
    valid item (done ones too) before the run and returns extra error records to write (e.g. bad events).
    """
    from tqdm import tqdm

    from engine.errors import InputError
    from engine.io import JsonlWriter, Line, describe_validation, done_ids, read_products
    from engine.runner import RunStats
    from schemas import ErrorRecord

    if getattr(args, "ray", None):
        return _run_ray(args, task_name, process, to_item, prepare)
    out = Path(args.output) if args.output not in (None, "-") else None
    skip = done_ids(out) if (args.resume and out) else set()
    if out and out.exists() and not args.resume and out.stat().st_size and not args.overwrite:
        print(f"facet: {out} exists; use --resume to continue it or --overwrite to replace it", file=sys.stderr)
        return 2
    lines = list(read_products(args.input))
    todo, bad, items = [], [], []
    for ln in lines:
        if ln.product is not None and to_item is not None:
            try:
                item = to_item(ln)
            except ValueError as exc:
                ln = Line(ln.number, None, InputError(describe_validation(exc), line=ln.number,
                                                      record_id=ln.product.id), raw=ln.raw)
        else:
            item = ln.product
        if ln.product is not None:
            items.append(item)
            if ln.product.id not in skip:
                todo.append(item)
        else:
            rid = ln.error.record_id or f"line:{ln.number}"
            if f"line:{ln.number}" not in skip:
                bad.append(ErrorRecord(id=rid, task=task_name, line=ln.number, error=ln.error.reason, input=ln.raw))
    bad += [r for r in (prepare(items) if prepare else []) if r.id not in skip]
    if skip:
        print(f"facet: resuming: {len(skip)} records already in {out}, {len(todo)} to go", file=sys.stderr)
    stats = RunStats()
    start = time.perf_counter()
    with JsonlWriter(out, append=bool(skip)) as writer:
        for rec in bad:
            writer.write(rec)
            print(f"facet: {f'line {rec.line}' if rec.line else rec.id}: {rec.error}", file=sys.stderr)
        if todo:
            bar = tqdm(total=len(todo), desc=task_name, unit="product", file=sys.stderr, disable=args.quiet)
            for res in process(todo, stats):
                writer.write(res)
                bar.update(1)
            bar.close()
    secs = time.perf_counter() - start
    n = stats.done + stats.failed
    print(
        f"facet: {stats.done} done, {stats.failed + len(bad)} errors ({len(bad)} bad input), "
        f"{stats.retried} re-asked, {secs:.1f}s" + (f", {secs / n:.2f}s/product" if n else "")
        + (f" -> {out}" if out else ""),
        file=sys.stderr,
    )
    return 0


def _run_ray(args, task_name: str, process, to_item=None, prepare=None) -> int:
    """The same command on a Ray cluster (engine/distributed.py): -o is a folder of partitions."""
    from engine import distributed

    if prepare is not None:
        raise ValueError(f"facet {task_name} --events needs every record in one process; run it without --ray")
    if args.output in (None, "-") or args.input == "-":
        raise ValueError("--ray reads files (a file, folder or glob) and writes a folder: give INPUT and -o FOLDER")
    summary = distributed.run(task_name, args.input, args.output, process, to_item, workers=args.workers,
                              batch_size=args.batch_size * 2, resume=args.resume, address=args.ray,
                              progress=not args.quiet)
    print(summary.line(args.output), file=sys.stderr)
    return 0


def _then_normalize(args):
    """The normalization step after extraction that --spec asks for (`facet extract` and `facet eval extract`)."""
    if not args.spec:
        return None
    if args.adapter and args.merge_adapter:
        raise ValueError("--spec normalizes with the base model, which a merged adapter replaces: drop "
                         "--merge-adapter (the adapter is then served beside the base model)")
    task = _normalize_task(args, after_extract=True)
    print(f"facet: the values found are normalized by {args.spec} ({len(task.examples)} normalization "
          "demonstrations)", file=sys.stderr)
    return task


def cmd_extract(args) -> int:
    from engine.runner import iter_task
    from prompts.tasks.normalize import normalize_found

    task = _task(args)
    normalize = _then_normalize(args)

    def process(todo, stats):
        backend = _backend(args)
        results = iter_task(backend, task, todo, chunk_size=args.batch_size * 2, stats=stats)
        return results if normalize is None else normalize_found(backend, normalize, todo, results,
                                                                 args.batch_size, stats)

    return _run_jsonl(args, "extract", process)


def _classify_task(args, taxonomy=None, examples=None):
    """The classify task from the options; ``taxonomy``/``examples`` (a pool) override --taxonomy/--examples."""
    from prompts.tasks.classify import Classify
    from schemas.taxonomy import Taxonomy, shopify_taxonomy_file

    if taxonomy is None:
        taxonomy = Taxonomy.load(args.taxonomy or shopify_taxonomy_file())
    if examples is None and args.examples:
        from eval.datasets import read_classification_gold
        from prompts.tasks.classify import labelled_pool

        examples = labelled_pool([(r.product, r.path) for r in read_classification_gold(args.examples)])
    return Classify(taxonomy=taxonomy, examples=examples, shots=args.shots, top_k=args.top_k,
                    review_below=args.review_below, template=args.template or "classify.j2", **_clip(args),
                    calibrate=getattr(args, "calibrate", False),
                    adapter="classify" if getattr(args, "adapter", None) else None)


def cmd_classify(args) -> int:
    from prompts.tasks.classify import classify_many

    task = _classify_task(args)

    def process(todo, stats):
        backend = _backend(args, "classify")
        for i in range(0, len(todo), args.batch_size):
            yield from classify_many(backend, task, todo[i : i + args.batch_size], stats=stats)

    return _run_jsonl(args, "classify", process)


def _schema_from_train(args):
    """Without --attributes: the per-category attribute list of the gold training file (--schema-from, default
    train.jsonl beside --data), or None when there is none."""
    from eval.datasets import read_extraction_gold, schema_from_gold

    if args.attributes:
        return None
    train = Path(getattr(args, "schema_from", None) or Path(args.data).with_name("train.jsonl"))
    if not train.is_file():
        return None
    print(f"facet: attribute schema per category from {train}", file=sys.stderr)
    return schema_from_gold(read_extraction_gold(train))


def _complete_task(args, schema=None):
    from engine.adapters import trained_attributes
    from prompts.examples import ExamplePool
    from prompts.tasks.complete import Complete
    from schemas import load_attribute_schema

    if schema is None and args.attributes:
        schema = load_attribute_schema(args.attributes)
    adapter = getattr(args, "adapter", None)
    if schema is None and (trained := trained_attributes(adapter)):
        schema = load_attribute_schema(trained)
    if schema is None:
        raise ValueError("complete needs to know which attributes each category should have: --attributes FILE "
                         "(JSON category -> attribute list, e.g. examples/attributes.json)")
    return Complete(attribute_schema=schema, examples=ExamplePool.from_jsonl(args.examples) if args.examples else None,
                    shots=args.shots, min_confidence=args.min_confidence, template=args.template or "complete.j2",
                    **_clip(args), adapter="complete" if adapter else None)


def cmd_complete(args) -> int:
    from engine.runner import iter_task

    task = _complete_task(args)

    def process(todo, stats):
        return iter_task(_backend(args, "complete"), task, todo, chunk_size=args.batch_size * 2, stats=stats)

    return _run_jsonl(args, "complete", process)


def _eval_complete(args) -> int:
    from eval.datasets import read_extraction_gold
    from eval.harness import evaluate_completion
    from eval.report import completion_markdown
    from eval.report import ratio_text as f

    task = _complete_task(args, _schema_from_train(args))
    rows = read_extraction_gold(args.data)[: args.limit]
    report = evaluate_completion(_backend(args, "complete"), task, args.data, rows, seed=args.seed,
                                 batch_size=args.batch_size, model=args.model, adapter_path=args.adapter,
                                 examples=args.examples)
    out = _write_report(args.output, report, completion_markdown)
    s = report["summary"]
    print(f"fill accuracy {f(s['fill_accuracy'])}  hidden recall {f(s['hidden_recall'])}  abstention precision "
          f"{f(s['abstention_precision'])}  false fills {f(s['false_fill_rate'])}  failures {s['failures']}/"
          f"{s['products']}  {report['seconds_per_product']:.2f} s/product  -> {out}/report.md")
    return 0


def _normalize_task(args, after_extract: bool = False):
    """``after_extract``: the normalization step of `facet extract --spec` / `facet eval extract --spec`, where
    --adapter and --examples are the extractor's: the base model decides values only (names stay the ones the
    extractor was asked for, unless an alias or spelling maps them), and demonstrations come only from a
    WDC-PAVE file that has its ``_normalized`` twin beside it (the same file as the extractor's demonstrations)."""
    from eval.datasets import normalized_twin
    from prompts.tasks.normalize import Normalize, load_examples
    from schemas.normalization import NormalizationSpec

    spec = NormalizationSpec.load(args.spec)
    if args.aliases:
        spec = spec.model_copy(update={"aliases": {**spec.aliases, **json.loads(Path(args.aliases).read_text())}})
    demos = args.examples
    if after_extract and demos and not normalized_twin(demos).is_file():
        demos = None
    examples = tuple(load_examples(demos)) if demos else ()
    return Normalize(spec=spec, examples=examples, shots=args.shots, drop_unknown=not args.keep_unknown,
                     adapter="normalize" if getattr(args, "adapter", None) and not after_extract else None,
                     ask_names=not after_extract)


def cmd_normalize(args) -> int:
    from engine.config import LazyBackend
    from prompts.tasks.normalize import normalize_many

    task = _normalize_task(args)

    def process(todo, stats):
        backend = LazyBackend(lambda: _backend(args, "normalize"))
        for i in range(0, len(todo), args.batch_size):
            yield from normalize_many(backend, task, todo[i : i + args.batch_size], stats=stats)

    return _run_jsonl(args, "normalize", process)


def _eval_normalize(args) -> int:
    from engine.config import LazyBackend
    from eval.datasets import read_normalization_gold
    from eval.harness import evaluate_normalization
    from eval.report import normalization_markdown

    if not args.spec:
        args.spec = str(Path(args.data).with_name("descriptions.csv"))
        print(f"facet: normalization rules from {args.spec}", file=sys.stderr)
    rows = read_normalization_gold(args.data)[: args.limit]
    task = _normalize_task(args)
    if args.examples and Path(args.examples).resolve() == Path(args.data).resolve():
        print("facet: demonstrations from the other products of the data (never a product's own)", file=sys.stderr)
    report = evaluate_normalization(LazyBackend(lambda: _backend(args, "normalize")), task, args.data, rows,
                                    batch_size=args.batch_size, model=args.model, adapter_path=args.adapter,
                                    spec=args.spec)
    out = _write_report(args.output, report, normalization_markdown)
    s = report["summary"]
    ops = "  ".join(f"{o['operation']} {o['f1']:.3f}" for o in report["operations"])
    print(f"micro-F1 {s['micro_f1']:.3f} over {s['slots']} slots ({ops})  failures {s['failures']}/{s['products']}  "
          f"{report['seconds_per_product']:.2f} s/product  -> {out}/report.md")
    return 0


def _rank_task(args, examples=None):
    from prompts.tasks.rank import Rank, load_rank_examples

    if examples is None and args.examples:
        examples = load_rank_examples(args.examples)
    return Rank(examples=tuple(examples or ()), shots=args.shots, reasons=getattr(args, "reasons", "none"),
                template=args.template or "rank.j2", **_clip(args),
                adapter="rank" if getattr(args, "adapter", None) else None,
                read_unmatched=getattr(args, "read_unmatched", False))


def _rank_events(args, items) -> tuple:
    """(Behaviour fed with --events, error records for the events that could not be applied)."""
    from engine.behaviour import Behaviour, read_events
    from engine.errors import InputError
    from schemas import ErrorRecord

    behaviour = Behaviour(strength=args.strength, half_life=args.half_life, segment_weight=args.segment_weight)
    errors = []
    if not args.events:
        return behaviour, errors
    names = {req.product.id: req.names for req in items}
    for number, ev in read_events(args.events):
        try:
            if isinstance(ev, InputError):
                raise ev
            behaviour.update(ev, names.get(ev.product))
        except InputError as exc:
            errors.append(ErrorRecord(id=f"events:{number}", task="rank", error=f"{args.events} line {number}: "
                                      f"{exc.reason}"))
    print(f"facet: {behaviour.events} events applied from {args.events}, {len(errors)} rejected", file=sys.stderr)
    return behaviour, errors


def cmd_rank(args) -> int:
    from prompts.tasks.rank import rank_many
    from schemas.ranking import RankRequest

    task = _rank_task(args)
    state = {}

    def to_item(ln):
        rec = dict(ln.raw)
        for k in ("query", "user", "segment"):
            if getattr(args, k) is not None:
                rec.setdefault(k, getattr(args, k))
        return RankRequest.from_record(rec)

    def prepare(items):
        state["behaviour"], errors = _rank_events(args, items)
        return errors

    def process(todo, stats):
        backend = _backend(args, "rank")
        for i in range(0, len(todo), args.batch_size):
            yield from rank_many(backend, task, todo[i : i + args.batch_size], state["behaviour"], stats=stats)

    return _run_jsonl(args, "rank", process, to_item=to_item, prepare=prepare)


def _eval_query(args) -> int:
    from eval.datasets import QUERY_ATTRIBUTION, read_query_gold
    from eval.harness import evaluate_query_attribution
    from eval.report import query_markdown

    data = args.data or QUERY_ATTRIBUTION
    rows = read_query_gold(data)[: args.limit]
    args.reasons = "none"
    task = _rank_task(args)
    backend = None if args.rules_only else _backend(args, "rank")
    report = evaluate_query_attribution(backend, task, data, rows, model=args.model, adapter_path=args.adapter)
    out = _write_report(args.output, report, query_markdown)
    s = report["summary"]
    print(f"phrase accuracy {s['accuracy']:.3f}  attribute phrases P {s['precision']:.3f} R {s['recall']:.3f} F1 "
          f"{s['f1']:.3f} over {s['phrases']} phrases of {s['queries']} searches  {report['seconds_per_product']:.2f} "
          f"s/search  -> {out}/report.md")
    return 0


def _eval_rank(args) -> int:
    from eval.datasets import read_rank_gold
    from eval.harness import evaluate_ranking, rank_demos
    from eval.report import ranking_markdown

    all_rows, skipped = read_rank_gold(args.data, args.taxonomy)
    rows = all_rows[: args.limit]
    examples = None
    if args.examples and Path(args.examples).resolve() == Path(args.data).resolve():
        examples = rank_demos(all_rows)
        print("facet: demonstrations from the other queries of the data (never one of the same class)",
              file=sys.stderr)
    args.reasons = "none"  # reasons are not scored
    task = _rank_task(args, examples)
    report = evaluate_ranking(_backend(args, "rank"), task, args.data, rows, batch_size=args.batch_size, seed=args.seed,
                              model=args.model, adapter_path=args.adapter, taxonomy=args.taxonomy)
    report["skipped"] = dict(skipped)
    out = _write_report(args.output, report, ranking_markdown)
    s, b = report["summary"], report["baselines"]
    print(f"NDCG@3 {s['ndcg@3']:.3f}  MRR {s['mrr']:.3f}  top-1 {s['top1']:.3f} over {s['cases']} queries "
          f"(given order {b['given order']['ndcg@3']:.3f}/{b['given order']['mrr']:.3f}, random "
          f"{b['random order']['ndcg@3']:.3f}/{b['random order']['mrr']:.3f})  failures {s['failures']}  "
          f"{report['seconds_per_product']:.2f} s/product  -> {out}/report.md")
    return 0


def _write_report(folder, report: dict, markdown) -> Path:
    """report.json and report.md (``markdown(report)``) into ``folder``; the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(markdown(report))
    return out


def _normalize_question(task, product):
    """The first question the model would be asked for this product (a name, else a value), or None."""
    from prompts.tasks.normalize import OTHER, Question

    for k, v in product.attributes.items():
        canon, _ = task.canonical_name(k, product.category)
        if canon is None:
            return Question(product, "name", k, v, (*task.spec.names(product.category), OTHER))
        rule = task.spec.rule_for(product.category, canon)
        if task.rule_value(rule, v)[0] is None:
            return Question(product, "value", canon, v, tuple(rule.options), rule.instruction)
    return None


def cmd_render(args) -> int:
    from engine.io import read_products
    from prompts.render import template_hash

    if args.task == "classify":
        args.top_k, args.review_below, args.calibrate = 3, 0.5, False
        task = _classify_task(args)
    elif args.task == "complete":
        args.adapter, args.min_confidence = None, 0.5
        task = _complete_task(args)
    elif args.task == "normalize":
        if not args.spec:
            print("facet: render --task normalize needs --spec FILE", file=sys.stderr)
            return 2
        args.aliases, args.keep_unknown, args.adapter = None, False, None
        task = _normalize_task(args)
    elif args.task == "rank":
        task = _rank_task(args)
    else:
        task = _task(args)
    for ln in read_products(args.input):
        if args.line and ln.number != args.line:
            continue
        if ln.product is None:
            print(f"facet: line {ln.number}: {ln.error.reason}", file=sys.stderr)
            return 1
        if args.task == "normalize":
            q = _normalize_question(task, ln.product)
            if q is None:
                print(f"facet: line {ln.number}: rules settle every attribute of this record; no prompt",
                      file=sys.stderr)
                return 0
            messages = task.messages(q)
        elif args.task == "rank":
            from schemas.ranking import RankRequest

            req = RankRequest.from_record(ln.raw)
            messages = task.messages(req)  # the first pick ("which matters most?")
        else:
            messages = task.messages(ln.product)  # classify: the first (top) level
        if args.format == "messages":
            print(json.dumps(messages, ensure_ascii=False, indent=2))
        else:
            from engine.chat import to_prompt_text
            from engine.models import load_tokenizer, resolve_model

            print(to_prompt_text(load_tokenizer(resolve_model(args.model)), messages), end="")
        if args.schema and args.task == "normalize":
            print("\n# output constraint (one of):")
            print(" | ".join(q.options))
        elif args.schema and args.task == "rank":
            print("\n# output constraint (one of; scored, or decoded one pick at a time):")
            print(" | ".join(req.names))
        elif args.schema and args.task == "classify":
            print("\n# output constraint (one of):")
            print(" | ".join(task.taxonomy.children(())))
        elif args.schema:
            print("\n# output constraint (JSON schema):")
            print(json.dumps(task.schema(ln.product), ensure_ascii=False)[:4000])
        print(f"\n# template {task.template} sha256:{template_hash(task.template)}", file=sys.stderr)
        return 0
    print(f"facet: no record at line {args.line}", file=sys.stderr)
    return 1


def cmd_eval(args) -> int:
    from eval.harness import evaluate_extraction
    from eval.report import extraction_markdown

    if args.task == "classify":
        return _eval_classify(args)
    if args.task == "normalize":
        return _eval_normalize(args)
    if args.task == "complete":
        return _eval_complete(args)
    if args.task == "rank":
        return _eval_rank(args)
    if args.task == "query":
        return _eval_query(args)
    if not args.data:
        raise ValueError(f"facet eval {args.task} needs --data FILE (the gold data)")
    from engine.config import grammar_engine

    normalized = None
    if args.spec:  # extraction, then normalization of what it found, scored end to end
        from eval.datasets import normalized_twin

        normalized = normalized_twin(args.data)
        if not normalized.is_file():
            raise FileNotFoundError(f"--spec scores extraction + normalization against the normalized gold beside "
                                    f"--data, and {normalized} does not exist (WDC-PAVE: train.jsonl with "
                                    "train_normalized.jsonl)")
    normalize = _then_normalize(args)
    task = _task(args, _schema_from_train(args))
    backend = _backend(args)
    report = evaluate_extraction(backend, task, args.data, limit=args.limit, batch_size=args.batch_size,
                                 normalize=normalize, normalized_gold=normalized,
                                 model=args.model, adapter_path=args.adapter,
                                 grammar=grammar_engine(args.grammar, getattr(args, "backend", "transformers")),
                                 examples=args.examples, spec=args.spec)
    out = _write_report(args.output, report, extraction_markdown)
    for label, r in (("", report), ("extract + normalize: ", report.get("end_to_end"))):
        if r is not None:
            s = r["summary"]
            print(f"{label}micro-F1 {s['micro_f1']:.3f}  P {s['precision']:.3f}  R {s['recall']:.3f}  macro-F1 "
                  f"{s['macro_f1']:.3f}  failures {s['failures']}/{s['products']}")
    print(f"{report['seconds_per_product']:.2f} s/product (extraction)  -> {out}/report.md")
    return 0


def _label_map(spec: str) -> dict[str, tuple[str, ...]]:
    """--label-map: 'pricerunner-shopify' (built in) or a JSON file {label: "A > B > C"}."""
    from eval.datasets import PRICERUNNER_SHOPIFY

    if spec == "pricerunner-shopify":
        return PRICERUNNER_SHOPIFY
    return {k: tuple(x.strip() for x in v.split(">")) for k, v in json.loads(Path(spec).read_text()).items()}


def _eval_classify(args) -> int:
    from eval.datasets import map_class_labels, read_classification_gold, split_by_group
    from eval.harness import evaluate_classification
    from eval.report import classification_markdown, confusion_png
    from prompts.tasks.classify import labelled_pool
    from schemas.taxonomy import Taxonomy, shopify_taxonomy_file

    rows = read_classification_gold(args.data)
    if args.label_map:
        rows = map_class_labels(rows, _label_map(args.label_map))
    sample, rest = split_by_group(rows, args.limit, args.seed)
    if args.taxonomy or args.label_map:  # labels mapped onto a taxonomy: Shopify's unless another is given
        taxonomy = Taxonomy.load(args.taxonomy or shopify_taxonomy_file())
    else:
        taxonomy = Taxonomy([r.path for r in rows], "labels of data")
    pool = None
    if args.examples:
        if Path(args.examples).resolve() == Path(args.data).resolve():
            pool_rows = rest  # never a product's own group
            print(f"facet: demonstrations from the {len(rest)} rows outside the sample and its product groups",
                  file=sys.stderr)
        else:
            pool_rows = read_classification_gold(args.examples)
        pool = labelled_pool([(r.product, r.path) for r in pool_rows])
    task = _classify_task(args, taxonomy, pool)
    report = evaluate_classification(_backend(args, "classify"), task, args.data, sample, seed=args.seed,
                                     batch_size=args.batch_size, model=args.model, adapter_path=args.adapter)
    out = _write_report(args.output, report, classification_markdown)
    confusion_png(report, out / "confusion.png")
    s = report["summary"]
    print(f"accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}  failures {s['failures']}/{s['products']}  "
          f"{report['seconds_per_product']:.2f} s/product  -> {out}/report.md, confusion.png")
    return 0


def cmd_compare(args) -> int:
    from eval.compare import charts, compare, load_run, markdown

    cmp = compare([load_run(r) for r in args.runs], examples=args.examples)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(cmp, indent=1, ensure_ascii=False))
    md = markdown(cmp)
    (out / "compare.md").write_text(md)
    pngs = [] if args.no_charts else charts(cmp, out)
    print(md.split("\n## ")[0].rstrip())
    print(f"-> {out}/compare.md" + "".join(f", {p.name}" for p in pngs))
    return 0


def cmd_bench(args) -> int:
    from eval.bench import grammar_compile, markdown, throughput
    from eval.datasets import read_extraction_gold
    from eval.report import provenance

    rows = read_extraction_gold(args.data)
    products = [r.product for r in rows][: args.limit]
    task = _task(args, _schema_from_train(args))
    if args.backends:
        return _bench_backends(args, task, products)
    backend = _backend(args)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    schemas = [task.schema(p) for p in products[: args.schemas]]
    # grammar compile times are facet's local engines; an OpenAI-compatible server compiles its own
    report = {"grammar": grammar_compile(backend.tokenizer, schemas) if args.backend != "openai" else {},
              "throughput": throughput(backend, task, products, sizes),
              "provenance": provenance(model=args.model, adapter=args.adapter, data=str(args.data),
                                       examples=args.examples)}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(markdown(report) + f"-> {out}")
    return 0


def _named_adapters(specs: list[str] | None) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (named by the task in its provenance, else by the folder) -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep:
            path = spec
            prov = Path(path) / "facet_provenance.json"
            name = json.loads(prov.read_text()).get("task") if prov.is_file() else None
            name = name or Path(path).name
        if name in out:
            raise ValueError(f"two adapters are named {name!r}; name them: --adapter NAME=PATH")
        out[name] = path
    return out


def serve_client_hint(model: str, adapters: list[str], host: str, port: int, grammar: str,
                      merged: bool = False) -> str:
    """The options that point a facet client at this server, with the faster span-schema form where it applies."""
    where = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    opts = f"--backend openai --base-url http://{where}:{port}/v1"
    opts += f" --model {model}" if model != DEFAULT_MODEL and not merged else ""  # merged: the base is not served
    several = len(adapters) > 1
    opts += f" --adapter {'NAME' if several else adapters[0]}" if adapters else ""
    opts += " --schema-as grammar" if grammar == "xgrammar" else ""  # compiled ~7x faster by vLLM (README)
    names = f" (NAME: {' | '.join(adapters)})" if several else ""
    return f"clients: facet TASK FILE {opts} -o OUT.jsonl{names}"


def cmd_serve(args) -> int:
    import shlex

    from engine import adapters as shipped
    from engine.adapters import DEFAULT, NONE
    from engine.serve import serve_command

    merge = args.merge_adapter
    if args.adapter and [a.lower() for a in args.adapter] == [NONE]:
        adapters = {}
    elif args.adapter:
        adapters = _named_adapters(args.adapter)
    elif shipped.shipped_tasks() and args.model == DEFAULT_MODEL:  # the shipped adapter serves every task: merged
        adapters, merge = {DEFAULT: str(shipped.SHIPPED_ADAPTER)}, not args.no_merge
    else:
        adapters = {}
    argv, env = serve_command(args.model, adapters, host=args.host, port=args.port,
                              grammar=args.grammar, max_model_len=args.max_model_len, extra=args.vllm_args,
                              merge=merge, dry_run=args.dry_run)
    print("facet: " + shlex.join(argv), file=sys.stderr)
    print("facet: " + serve_client_hint(args.model, sorted(adapters), args.host, args.port,
                                        args.grammar, merged=merge), file=sys.stderr)
    if args.dry_run:
        return 0
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        from engine.backends.vllm import INSTALL_HINT

        raise ValueError(INSTALL_HINT)
    os.execve(argv[0], argv, env)  # the server takes over this process: Ctrl-C stops it


# -merged: the adapter merged into the weights; -grammar: the openai client sends span schemas as vLLM grammars
BENCH_BACKENDS = ("transformers", "vllm", "vllm-merged", "openai", "openai-merged", "openai-grammar",
                  "openai-merged-grammar")


def _bench_backends(args, task, products) -> int:
    """Each backend in turn on the same products (one process, nothing else running)."""
    import gc
    import socket
    from argparse import Namespace

    from engine.config import grammar_engine
    from eval.bench import backend_run, backends_markdown
    from eval.report import provenance

    names = [n.strip() for n in args.backends.split(",")]
    unknown = set(names) - set(BENCH_BACKENDS)
    if unknown:
        raise ValueError(f"unknown backend(s) {sorted(unknown)}; choose from {', '.join(BENCH_BACKENDS)}")
    rows: dict[str, dict] = {}
    for name in names:
        print(f"facet: bench {name} ({len(products)} products)", file=sys.stderr)
        merged = "-merged" in name
        opts = Namespace(**{**vars(args), "backend": name.split("-")[0], "merge_adapter": merged,
                            "schema_as": "grammar" if name.endswith("-grammar") else args.schema_as})
        if opts.backend == "openai":
            from engine.serve import running_server

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            adapters = {"extract": args.adapter} if args.adapter else {}
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            grammar = grammar_engine(args.grammar, "vllm")  # the server is vLLM
            # dev mode: the bench resets the server's prefix cache between the runs it compares
            with running_server(args.model, adapters, port=port, merge=merged, grammar=grammar,
                                env={"VLLM_SERVER_DEV_MODE": "1"},
                                log_file=Path(args.output).with_suffix(f".{name}.log")) as url:
                opts.base_url = url
                # a dedicated local server: many requests in flight, as the in-process engine gets them in one batch
                # (64: more queue past the client's 120 s timeout on this CPU, and timed-out requests are retried)
                opts.concurrency = args.concurrency or min(64, len(products))
                backend = _backend(opts)
                rows[name] = backend_run(backend, task, products, compare_base=not merged)
                rows[name].update(grammar=grammar, concurrency=opts.concurrency, schema_as=opts.schema_as)
        else:
            backend = _backend(opts)
            rows[name] = backend_run(backend, task, products, compare_base=not merged)
            rows[name]["grammar"] = grammar_engine(args.grammar, opts.backend)
            if hasattr(backend, "close"):  # free vLLM's engine before the next backend starts
                backend.close()
        del backend
        gc.collect()
        print(backends_markdown(rows), file=sys.stderr)
        # written after every backend: an interrupted comparison keeps the rows it finished
        report = {"backends": rows, "provenance": provenance(model=args.model, adapter=args.adapter,
                                                              data=str(args.data), examples=args.examples)}
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    print(backends_markdown(rows) + f"-> {out}")
    return 0


def cmd_train(args) -> int:
    from finetune.train import TrainConfig, train_from_args

    if args.task == "default":
        return _train_default(args)
    if not args.train or not args.output:
        raise ValueError(f"facet train {args.task} needs --train FILE (the training data) and -o FOLDER")
    return train_from_args(args, TrainConfig)


def _train_default(args) -> int:
    """The shipped multi-task adapter, rebuilt from a data folder (see finetune/default.py)."""
    import torch

    from engine import adapters as shipped
    from finetune.default import SHIPPED_TRAINING, Recipe, train_default
    from finetune.train import TrainConfig

    data = Path(args.data)
    if not (data / "oa-mine" / "train.jsonl").is_file():
        raise ValueError(f"{data} is not a data folder with oa-mine/, pricerunner/ and shopify-taxonomy/ "
                         f"(pass --data DIR)")
    given = {"rank": args.rank, "lr": args.lr, "epochs": args.epochs, "layers": args.layers, "max_len": args.max_len}
    cfg = TrainConfig(task="default", model=args.model, batch_size=args.batch_size, max_steps=args.max_steps,
                      seed=args.seed, threads=args.threads, bf16=args.bf16, device=args.device, batching=args.batching,
                      patience=args.patience, **{**SHIPPED_TRAINING, **{k: v for k, v in given.items() if v is not None}})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(args.output or shipped.SHIPPED_ADAPTER)
    recipe = Recipe(seed=args.seed, **({"tasks": tuple(args.tasks.split(","))} if args.tasks else {}))
    prov = train_default(data, out, cfg, recipe, resume=args.resume, command=" ".join(["facet", *sys.argv[1:]]))
    print(f"facet: adapter written to {out} ({prov['steps']} steps, {prov['train_seconds']:.0f}s, "
          f"{prov['train_tokens_per_s']:.0f} tokens/s, best val loss {prov['best_val_loss']})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facet", description="Structured product attributes from messy product text, with a small LLM "
        "under grammar constraints.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("extract", help="extract attributes from a JSONL file of products",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_io_options(p)
    _add_task_options(p)
    _add_normalize_options(p, spec_required=False, prompt=False)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("classify", help="assign products to categories of a taxonomy (level by level)",
                       description="Classify products into a taxonomy. Each level chooses among the children of "
                       "the node chosen so far, so answers are always real paths; each result has a confidence, "
                       "top-k alternatives and a needs_review flag.",
                       epilog="examples:\n  facet classify examples/products.jsonl --taxonomy examples/taxonomy.json\n"
                       "  facet classify products.jsonl --taxonomy ../shared/data/shopify-taxonomy/categories.txt "
                       "-o cats.jsonl\n  facet classify products.jsonl --taxonomy t.json --examples labelled.jsonl "
                       "--shots 3   # demos: {title, category}", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_io_options(p)
    _add_classify_options(p)
    _add_demo_options(p, "labelled demonstrations: JSONL {title, category} or PriceRunner-style CSV", "classify.j2")
    _add_model_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("normalize", help="canonical attribute names and values (units, colours, allowed values)",
                       description="Normalize each product's `attributes` ({name: value}) by a spec: names onto a "
                       "canonical vocabulary (aliases, spelling, then the model), values by rule (pint unit "
                       "conversion, numbers, string wrangling, expansions, webcolors colour names), and the model "
                       "only where a value must be mapped onto allowed values no rule settles. Every change is "
                       "recorded with what made it.",
                       epilog="examples:\n  facet normalize examples/to_normalize.jsonl --spec examples/normalization.json\n"
                       "  facet normalize offers.jsonl --spec ../shared/data/wdc-pave/descriptions.csv -o norm.jsonl\n"
                       "  facet eval normalize --data ../shared/data/wdc-pave/train.jsonl",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_io_options(p)
    _add_normalize_options(p)
    _add_model_options(p)
    p.set_defaults(func=cmd_normalize)

    p = sub.add_parser("complete", help="predict missing attribute values (given values are never changed)",
                       description="For each product, ask for every attribute its category should have (--attributes) "
                       "that its record lacks. Values are spans of the product text or an attribute's allowed "
                       "values, or null; each carries a confidence from the token probabilities and whether it is "
                       "stated in the text or inferred; answers under --min-confidence become abstentions.",
                       epilog="examples:\n  facet complete examples/to_complete.jsonl --attributes examples/attributes.json\n"
                       "  facet complete products.jsonl --attributes attrs.json --examples ../shared/data/oa-mine/"
                       "train.jsonl -o filled.jsonl\n  facet eval complete --data ../shared/data/oa-mine/validation.jsonl "
                       "--examples ../shared/data/oa-mine/train.jsonl", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_io_options(p)
    _add_task_options(p)
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="abstain (null, reported) when a value's probability is below this (default 0.5)")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("rank", help="order each product's attributes by importance to a shopper (query, behaviour)",
                       description="Order each product's attributes (its `attributes` keys, or a `rank` list of names) "
                       "by how much they matter to the shopper: the model scores every name as the answer to 'which "
                       "attribute matters most?' (the output is always a permutation of the given names, weights sum "
                       "to 1), behaviour events from --events move the weights by a documented rule (README), and a "
                       "short reason is decoded for each attribute. A record may carry its own query, user and segment.",
                       epilog="examples:\n  facet rank examples/to_rank.jsonl --query 'blue velvet sofa'\n"
                       "  facet rank examples/to_rank.jsonl --events examples/events.jsonl --user u1 -o ranked.jsonl\n"
                       "  facet eval rank --data ../shared/data/wands/query.csv --examples ../shared/data/wands/query.csv\n"
                       "records: {\"id\": \"p1\", \"title\": \"...\", \"attributes\": {\"Color\": \"blue\", ...}, "
                       "\"query\": \"...\", \"user\": \"u1\"}\nevents:  {\"user\": \"u1\", \"segment\": \"s\", "
                       "\"product\": \"p1\", \"event\": \"click\", \"attributes\": {\"Color\": \"blue\"}}  "
                       "(event: view, click, add_to_cart, purchase)", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_io_options(p)
    _add_rank_options(p)
    g = _add_demo_options(p, "demonstrations: records as above plus \"answer\": the attribute that matters most",
                          "rank.j2")
    g.add_argument("--max-input-chars", type=int, default=None,
                   help="truncate title+description beyond this (default 1000, rank's own default)")
    g.add_argument("--reasons", choices=["evidence", "model", "none"], default="evidence",
                   help="'evidence' (default): what the search named, the model's weight, the behaviour share; "
                   "'model': a reason written by the model (slower, and a small model's are often wrong)")
    g.add_argument("--read-unmatched", action="store_true",
                   help="also let the model attribute search words that no rule matches (values the taxonomy "
                   "does not list); off by default, see docs/benchmarks.md")
    _add_model_options(p)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("render", help="print the exact prompt for one record (no model is run)")
    p.add_argument("input", help="JSONL products")
    p.add_argument("--line", type=int, default=None, help="line number of the record (default: the first)")
    p.add_argument("--format", choices=["text", "messages"], default="text",
                   help="'text': after the model's chat template (exactly what the model sees); 'messages': JSON")
    p.add_argument("--schema", action="store_true", help="also print the output constraint")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model whose chat template to apply")
    p.add_argument("--task", choices=["extract", "classify", "normalize", "complete", "rank"], default="extract",
                   help="whose prompt (default extract; normalize: the first question the rules leave to the model)")
    p.add_argument("--taxonomy", metavar="FILE", help="classify: the taxonomy (the prompt shows its top level)")
    p.add_argument("--spec", metavar="FILE", help="normalize: the normalization spec")
    _add_task_options(p, model=False)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("eval", help="score a task on gold data (extraction: the published OA-Mine / WDC-PAVE metric, exact-match micro-F1 over gold slots; see eval/metrics.py)")
    p.add_argument("task", choices=["extract", "classify", "normalize", "complete", "rank", "query"],
                   help="query: which phrase of a search goes to which attribute (rank's query understanding), on "
                   "hand-labelled searches (default --data: eval/data/query_attribution.jsonl)")
    p.add_argument("--read-unmatched", action="store_true", help="rank, query: the model also reads search words "
                   "no rule attributes")
    p.add_argument("--rules-only", action="store_true", help="query: the rules alone (no model is loaded)")
    p.add_argument("--data", help="gold data: JSONL (OA-Mine / WDC-PAVE) for extract and complete; "
                   "PriceRunner CSV or JSONL {title, category} for classify; WDC-PAVE train.jsonl (with "
                   "train_normalized.jsonl beside it) for normalize; WANDS query.csv for rank (--taxonomy: the "
                   "Shopify taxonomy folder, default shopify-taxonomy beside the data's folder)")
    p.add_argument("--schema-from", help="derive the per-category attribute list from this gold file "
                   "(default: train.jsonl beside --data)")
    p.add_argument("--limit", type=int, default=None, help="only the first N records")
    p.add_argument("-o", "--output", default="runs/eval", help="folder for report.json and report.md")
    p.add_argument("--seed", type=int, default=0, help="classify: seed of the random sample of --limit rows")
    p.add_argument("--label-map", metavar="NAME|FILE",
                   help="classify: map the data's labels onto --taxonomy paths: 'pricerunner-shopify' (PriceRunner's "
                   "10 categories on Shopify's taxonomy, built in) or a JSON file {label: 'A > B > C'}")
    _add_task_options(p)
    _add_classify_options(p)
    _add_normalize_options(p, spec_required=False, prompt=False)
    p.add_argument("--min-confidence", type=float, default=0.5, help="complete: abstain below this confidence")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="compare eval runs side by side (Markdown, JSON, PNG charts)",
                       description="Compare `facet eval` runs: summary, F1 per attribute, and the slots each run "
                       "fixed or broke against the first (baseline) run.",
                       epilog="example:\n  facet compare zero-shot=runs/zs few-shot=runs/fs adapter=runs/adapter "
                       "-o runs/compare", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="[LABEL=]DIR", help="eval output folders; the first is the baseline")
    p.add_argument("-o", "--output", default="runs/compare", help="folder for compare.md/json and charts")
    p.add_argument("--examples", type=int, default=10, help="fixed/broken examples to list per run (default 10)")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="grammar compile time, throughput per batch size, constrained vs free decoding")
    p.add_argument("--data", required=True, help="products or gold JSONL (OA-Mine/WDC format)")
    p.add_argument("--limit", type=int, default=32, help="products to time (default 32)")
    p.add_argument("--batch-sizes", default="1,8,16", help="comma-separated batch sizes (default 1,8,16)")
    p.add_argument("--schemas", type=int, default=20, help="distinct schemas to time compiling (default 20)")
    p.add_argument("--backends", metavar="LIST",
                   help=f"compare backends side by side instead: comma-separated from {', '.join(BENCH_BACKENDS)} "
                   "('-merged': the adapter merged into the weights; 'openai': starts a local vLLM server; "
                   "'-grammar': the client sends span schemas as grammars, --schema-as grammar)")
    p.add_argument("-o", "--output", default="runs/bench.json", help="JSON results")
    _add_task_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("serve", help="start vLLM's OpenAI-compatible server with the model and adapters",
                       description="Start `vllm serve` (as python -m vllm.entrypoints.openai.api_server) with the "
                       "settings facet's clients expect: compact-JSON xgrammar structured outputs, adapters served "
                       "under their task names, prefix caching, and on CPU fp32 with every core for the model. "
                       "Point clients at it with --backend openai --base-url http://HOST:PORT/v1 (it prints the options, with "
                       "--schema-as grammar for its xgrammar: faster span schemas).",
                       epilog="examples:\n  facet serve --adapter adapters/extract            # served as 'extract'\n"
                       "  facet extract products.jsonl --backend openai --adapter extract --schema-as grammar -o out.jsonl\n"
                       "  facet serve --port 8001 --dry-run                   # print the command only\n"
                       "  facet serve -- --tensor-parallel-size 2             # anything after -- goes to vLLM\n"
                       "scale out: run one server per GPU/machine and put a router (e.g. nginx, vLLM's router) in "
                       "front;\nfacet's openai backend retries and resumes, so replicas can come and go.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model to serve (also its served name)")
    p.add_argument("--adapter", action="append", metavar="[NAME=]PATH",
                   help="LoRA adapter to serve (repeatable); NAME defaults to the task it was trained for. "
                   "Default: the shipped adapter, merged into the weights and served as 'default' (clients: "
                   "--adapter default); 'none': the base model only")
    p.add_argument("--no-merge", action="store_true",
                   help="serve the shipped adapter as LoRA beside the base model instead of merged")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--grammar", choices=["xgrammar", "llguidance"], default="xgrammar",
                   help="structured-output engine (default xgrammar)")
    p.add_argument("--max-model-len", type=int, default=4096, help="longest prompt + answer in tokens")
    p.add_argument("--merge-adapter", action="store_true",
                   help="serve the one --adapter merged into the weights, under its name only (~1.2-1.3x the "
                   "products/s of LoRA on the CPU build; the base model is then not served)")
    p.add_argument("--dry-run", action="store_true", help="print the server command and exit")
    p.add_argument("vllm_args", nargs="*", metavar="-- VLLM_ARGS", help="extra arguments for vLLM, after --")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("train", help="fine-tune a LoRA adapter for a task, or rebuild the shipped one (default)")
    p.add_argument("task", choices=["default", "extract", "classify", "complete", "rank"],
                   help="'default' rebuilds the adapter facet ships (all tasks, one adapter) from --data")
    p.add_argument("--data", default="../shared/data", metavar="DIR",
                   help="default: the data folder (oa-mine/, pricerunner/, shopify-taxonomy/; default ../shared/data)")
    p.add_argument("--tasks", metavar="LIST", help="default: train only these tasks (comma-separated)")
    p.add_argument("--layers", type=int, default=None, metavar="N",
                   help="LoRA on the top N decoder layers only (faster: the backward pass stops below them)")
    p.add_argument("--patience", type=int, default=1, help="epochs without a lower validation loss before stopping")
    p.add_argument("--train", help="extract, complete: JSONL (OA-Mine/WDC format or facet examples); "
                   "classify: PriceRunner CSV or JSONL {title, category}; rank: a Shopify taxonomy folder "
                   "(synthetic queries: an allowed value + the category name) or JSONL rank demonstrations")
    p.add_argument("--taxonomy", metavar="FILE", help="classify: the taxonomy (default: the labels of --train)")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="classify: leave out the N rows (and their product clusters) that `facet eval classify "
                   "--limit N --seed SEED` scores")
    p.add_argument("--max-records", type=int, default=None, help="classify: train on a seeded sample of this many; "
                   "rank from a taxonomy: synthetic queries to make (default 2000)")
    p.add_argument("--val", help="validation JSONL (for early stopping)")
    p.add_argument("-o", "--output", help="adapter folder to write (default for 'default': the shipped adapter "
                   "inside the package)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--epochs", type=float, default=None, help="passes over the data (default 3; default: 1)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4; default: 5e-4)")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default 16; default: 32 on the top 10 layers)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUTPUT")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (use on GPUs / AMX CPUs; measured >5x slower than fp32 on this 2-core CPU)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when visible), cpu, or cuda")
    p.add_argument("--batching", choices=("length", "random", "pack"), default="length",
                   help="how records form a step: 'length' (default) groups records of similar length (least "
                   "padding), 'random' plain shuffled steps, 'pack' packs each step's records into shared rows "
                   "with a block-diagonal mask; see README for the measured speeds")
    p.add_argument("--augment", type=int, default=0, metavar="N",
                   help="extract: add up to N changed copies of each training record: comma-separated parts "
                   "reordered, one value deleted from the title (answer null), lower case; complete: hide N more "
                   "attributes of each record, in turn (default 0)")
    p.add_argument("--max-len", type=int, default=None, metavar="TOKENS",
                   help="skip training records whose prompt + answer is longer (default 512; 1024 with --examples)")
    p.epilog = ("extract with --examples trains on prompts that carry --shots demonstrations from that pool "
                "(a record never sees itself); give the same --examples at inference (facet warns if not).")
    _add_task_options(p, model=False)
    p.set_defaults(func=cmd_train)
    return parser


def _quiet_libraries() -> None:
    """-q: no progress bars from the libraries either (transformers' weight loading, huggingface_hub)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm (>= 4.66) for every bar made after this
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars ("Loading weights")


def _default_adapter(args) -> None:
    """--adapter left out (or 'default'): the shipped adapter, for the tasks it was trained on, when the prompts
    carry no demonstrations (its training prompts had none); 'none': the base model. A server's adapters are names
    it serves, so the openai backend only takes 'none' from this."""
    from engine.adapters import NONE, resolve_adapter

    if args.command in ("serve", "train") or not hasattr(args, "adapter"):
        return
    if getattr(args, "backend", "transformers") == "openai":
        if args.adapter and args.adapter.lower() == NONE:
            args.adapter = None
        return
    task = {"eval": getattr(args, "task", None), "render": getattr(args, "task", None), "bench": "extract"}.get(
        args.command, args.command)
    if args.adapter is None and getattr(args, "examples", None):
        # the shipped adapter was trained on prompts without demonstrations; with them the base model answers
        # (measured better), unless asked: --adapter default
        return
    args.adapter = resolve_adapter(args.adapter, task, getattr(args, "model", None))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "batch_size") and args.batch_size is None:
        args.batch_size = 16 if getattr(args, "backend", "transformers") == "transformers" else 128
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="facet: %(message)s")
    _default_adapter(args)
    if getattr(args, "quiet", False):
        _quiet_libraries()
    from engine.errors import FacetError

    try:
        return args.func(args)
    except (FacetError, ValueError, FileNotFoundError) as exc:
        print(f"facet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facet: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
