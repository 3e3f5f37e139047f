"""`facet TASK INPUT`: one command for every registered task (prompts/tasks), streaming JSONL in and out with
resume, error records for bad input, and a summary; `--ray` runs the same per-product work on a Ray cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.cli.options import add_dataclass_options, add_io_options, add_model_options, backend_for, setup_for

TASK_EPILOG = """input: JSON Lines, one product per line: {"id": "p1", "title": "...", "description": "...", "category": "..."}
       ("input"/"input_title" are accepted for the title). Bad lines become error records; the run goes on."""


def add_task_commands(sub) -> None:
    from prompts.tasks.base import REGISTRY

    for td in REGISTRY.values():
        p = sub.add_parser(td.name, help=td.help, description=td.description or td.help,
                           epilog="\n\n".join(x for x in (td.epilog, TASK_EPILOG) if x),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_io_options(p)
        add_dataclass_options(p, td.options, f"{td.name} options")
        add_model_options(p)
        p.set_defaults(func=cmd_task)


def cmd_task(args) -> int:
    from engine.config import LazyBackend
    from prompts.tasks.base import get, options_from

    td = get(args.command)
    opts = options_from(td.options, vars(args))
    setup = setup_for(args, td.name)
    task = td.build(opts, setup)
    state: dict = {}

    def to_item(ln):
        return td.item(opts, dict(ln.raw) if td.reads == "record" else ln.product, ln.number)

    def prepare(items):
        state["state"], errors = td.prepare(opts, items, setup) if td.prepare else (None, [])
        return errors

    if getattr(args, "ray", None):  # every worker gets what needs no input records (td.prepare with items=None)
        prepare(None)

    size = args.batch_size * (2 if td.batch == "chunk" else 1)

    def process(todo, stats):  # shipped to every Ray worker with what it closes over
        backend = LazyBackend(lambda: backend_for(args, td.name))
        for i in range(0, len(todo), size):
            yield from td.run(backend, task, todo[i : i + size], stats, state.get("state"))

    prov = run_provenance(args, td, opts, task)
    if getattr(args, "ray", None):
        return run_ray(args, td.name, process, to_item, prov)
    return run_jsonl(args, td.name, process, to_item, prepare, prov)


def run_provenance(args, td, opts, task) -> dict:
    """What goes into OUT.provenance.json: the model, the adapter, the template and its hash, every option."""
    from dataclasses import asdict

    from prompts.render import template_hash

    template = getattr(task, "template", None)
    try:
        digest = template_hash(template) if template else None
    except OSError:
        digest = None
    return {"task": td.name, "model": args.model, "backend": getattr(args, "backend", "transformers"),
            "adapter": getattr(args, "adapter", None), "template": template, "template_hash": digest,
            "options": asdict(opts), "input": args.input}


def run_jsonl(args, task_name: str, process, to_item=None, prepare=None, provenance: dict | None = None) -> int:
    """Read JSONL, skip done ids (--resume), stream results, summarize.

    ``process(items, stats)`` yields one result per item, in order. ``to_item(line)`` turns a valid line into the
    task's item (default: its Product; a ValueError makes it a bad-input record). ``prepare(items)`` sees every
    valid item (done ones too) before the run and returns extra error records to write (e.g. bad events).
    ``provenance``: written beside OUTPUT as OUT.provenance.json with the run's counts (engine.provenance).
    """
    from tqdm import tqdm

    from engine.errors import InputError
    from engine.io import JsonlWriter, Line, describe_validation, done_ids, read_products
    from engine.runner import RunStats
    from schemas import ErrorRecord

    out = Path(args.output) if args.output not in (None, "-") else None
    skip = done_ids(out) if (args.resume and out) else set()
    if out and out.exists() and not args.resume and out.stat().st_size and not args.overwrite:
        print(f"facet: {out} exists; use --resume to continue it or --overwrite to replace it", file=sys.stderr)
        return 2
    todo, bad, items = [], [], []
    for ln in read_products(args.input):
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
    if out and provenance is not None:
        from engine.provenance import write_sidecar

        write_sidecar(out, {**provenance, "resumed": bool(skip), "seconds": round(secs, 1), "records": {
            "done": stats.done, "failed": stats.failed, "bad_input": len(bad), "skipped_as_done": len(skip)}})
    return 0


def run_ray(args, task_name: str, process, to_item=None, provenance: dict | None = None) -> int:
    """The same command on a Ray cluster (engine/distributed.py): -o is a folder of partitions."""
    from engine import distributed

    if args.output in (None, "-") or args.input == "-":
        raise ValueError("--ray reads files (a file, folder or glob) and writes a folder: give INPUT and -o FOLDER")
    summary = distributed.run(task_name, args.input, args.output, process, to_item, workers=args.workers,
                              batch_size=args.batch_size * 2, resume=args.resume, address=args.ray,
                              progress=not args.quiet, partitions=args.partitions)
    print(summary.line(args.output), file=sys.stderr)
    if provenance is not None and "://" not in args.output:  # an object store's output: the summary line only
        from engine.provenance import write_sidecar

        write_sidecar(args.output, {**provenance, "ray": args.ray, "workers": args.workers,
                                    "summary": summary.line(args.output)})
    return 0
