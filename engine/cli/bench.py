"""`facet bench`: grammar compile time, throughput per batch size, and backends side by side on the same products."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli.options import add_dataclass_options, add_model_options, backend_for, setup_for
from engine.types import ClosableBackend, TokenizingBackend


def schema_from(args):
    """Without --attributes: the per-category attribute list of train.jsonl beside --data, or None."""
    from eval.datasets import read_extraction_gold, schema_from_gold

    if getattr(args, "attributes", None):
        return None
    train = Path(args.data).with_name("train.jsonl")
    if not train.is_file():
        return None
    print(f"facet: attribute schema per category from {train}", file=sys.stderr)
    return schema_from_gold(read_extraction_gold(train))


def add_bench_command(sub) -> None:
    from prompts.tasks.base import get

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
    add_dataclass_options(p, get("extract").options, "extract prompt")
    add_model_options(p)
    p.set_defaults(func=cmd_bench, examples=None, attributes=None)


def cmd_bench(args) -> int:
    from eval.bench import grammar_compile, markdown, throughput
    from eval.datasets import read_extraction_gold
    from eval.report import provenance

    rows = read_extraction_gold(args.data)
    products = [r.product for r in rows][: args.limit]
    from prompts.tasks.base import get, options_from

    schema = schema_from(args)
    td = get("extract")
    values = {**vars(args), **({"attributes": schema} if schema is not None else {})}
    task = td.build(options_from(td.options, values), setup_for(args, "extract"))
    if args.backends:
        return bench_backends(args, task, products)
    backend = backend_for(args)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    schemas = [task.schema(p) for p in products[: args.schemas]]
    # grammar compile times are facet's local engines; an OpenAI-compatible server compiles its own
    report = {"grammar": grammar_compile(backend.tokenizer, schemas) if isinstance(backend, TokenizingBackend) else {},
              "throughput": throughput(backend, task, products, sizes),
              "provenance": provenance(model=args.model, adapter=args.adapter, data=str(args.data),
                                       examples=args.examples)}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(markdown(report) + f"-> {out}")
    return 0


# -merged: the adapter merged into the weights; -grammar: the openai client sends span schemas as vLLM grammars
BENCH_BACKENDS = ("transformers", "vllm", "vllm-merged", "openai", "openai-merged", "openai-grammar",
                  "openai-merged-grammar")


def bench_backends(args, task, products) -> int:
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
                backend = backend_for(opts)
                rows[name] = backend_run(backend, task, products, compare_base=not merged)
                rows[name].update(grammar=grammar, concurrency=opts.concurrency, schema_as=opts.schema_as)
        else:
            backend = backend_for(opts)
            rows[name] = backend_run(backend, task, products, compare_base=not merged)
            rows[name]["grammar"] = grammar_engine(args.grammar, opts.backend)
            if isinstance(backend, ClosableBackend):  # free vLLM's engine before the next backend starts
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


