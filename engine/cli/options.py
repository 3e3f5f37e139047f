"""Command-line options: the shared groups (input/output, model), task options generated from each task's options
dataclass, and the two things every command builds from them: the task's Setup and the backend."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from engine.models import DEFAULT_MODEL


def add_io_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="JSONL products ('-' for stdin)")
    p.add_argument("-o", "--output", default="-", help="JSONL results ('-' for stdout, the default)")
    p.add_argument("--resume", action="store_true", help="skip ids already in OUTPUT and append the rest")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: 'auto' (the one RAY_ADDRESS or `ray "
                   "start` names, else a local one) or an address; INPUT may be a folder or glob, -o is a folder of "
                   "partitions (pip install 'facet[ray]'; see docs/distributed.md)")
    p.add_argument("--workers", type=int, default=2, help="with --ray: actors, each holding one engine (default 2)")
    p.add_argument("--partitions", choices=["jsonl", "parquet"], default="jsonl",
                   help="with --ray: the partitions' format (parquet: columns id, ok, task, error, record as JSON)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL,
                   help="'smollm2-135m' (embedded default), a local HF folder, or a .gguf file")
    m.add_argument("--adapter", metavar="PATH", help="LoRA adapter folder trained with `facet train`; default: the "
                   "adapters facet ships (extract, classify, complete, rank; not with --examples: they were trained "
                   "without demonstrations and the base model reads them better; 'default' forces them); 'none': the "
                   "base model")
    m.add_argument("--grammar", choices=["llguidance", "xgrammar"], default=None,
                   help="grammar engine for constrained decoding (default: llguidance for transformers, xgrammar for "
                   "vllm, each the faster there; an openai server uses its own)")
    m.add_argument("--batch-size", type=int, default=None,
                   help="products per batch (default: 16 for transformers, 128 for vllm and openai, which batch "
                   "or queue continuously and are faster with more in flight)")
    m.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    m.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="model weights (default float32: fastest on CPU; use bfloat16 on a GPU)")
    m.add_argument("--device", default="auto", help="transformers backend: auto (a CUDA GPU when visible), cpu, cuda")
    m.add_argument("--backend", choices=["transformers", "vllm", "openai"], default="transformers",
                   help="'vllm': the in-process vLLM engine (install with `make setup-vllm`); 'openai': send requests "
                   "to an OpenAI-compatible server (e.g. vllm serve); --model is then the served model name and "
                   "--adapter NAME must be served as NAME (--lora-modules NAME=PATH)")
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
                   "on the CPU build ~1.2-1.3x the products/s of LoRA (docs/benchmarks.md)")


def add_dataclass_options(p: argparse.ArgumentParser, options: type, title: str = "prompt") -> None:
    """One flag per CLI-visible field of an options dataclass (``prompts.tasks.base.option``). Flags absent from
    the command line stay out of the namespace (argparse.SUPPRESS), so the dataclass's default applies: one
    place for each default. A flag the parser already has (shared by several tasks) is not added twice."""
    from prompts.tasks.base import cli_options

    g = None
    for flag, default, meta in cli_options(options):
        if flag in p._option_string_actions:
            continue
        g = g or p.add_argument_group(title)
        shown = "" if default in (None, False) else f" (default {default})"
        kw: dict[str, Any] = {"dest": meta["dest"], "default": argparse.SUPPRESS, "help": meta["help"] + shown}
        if isinstance(default, bool):
            kw["action"] = "store_true"
        else:
            kw["type"] = meta.get("type") or (type(default) if default is not None else str)
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
        g.add_argument(flag, **kw)


def add_all_task_options(p: argparse.ArgumentParser) -> None:
    """The options of every registered task (for commands that take --task: render)."""
    from prompts.tasks.base import REGISTRY

    for td in REGISTRY.values():
        add_dataclass_options(p, td.options, f"{td.name} prompt")


def task_options(args, td) -> Any:
    from prompts.tasks.base import options_from

    return options_from(td.options, vars(args))


def setup_for(args, name: str):
    """A task's Setup: --adapter (resolved) serves its requests under the task's name."""
    from prompts.tasks.base import Setup

    adapter = getattr(args, "adapter", None)
    return Setup(adapter=adapter, adapter_name=name if adapter else None,
                 merged=bool(getattr(args, "merge_adapter", False)))


_BACKENDS: dict = {}  # one backend per configuration and process (a Ray worker reuses it for every batch)


def backend_for(args, task: str = "extract"):
    """The backend the options ask for; --adapter is served under the task's name, beside the adapters the task's
    requests also name (``TaskDef.adapters``: complete's cross-check reads with the extraction adapter)."""
    from engine.config import EngineConfig
    from prompts.tasks.base import get

    adapters = {}
    if args.adapter:  # the task's own, and the local ones its requests also name (not beside a merged adapter)
        td = get(task)
        local = getattr(args, "backend", "transformers") != "openai"  # a server's adapters are its own names
        if td.adapters and local and not getattr(args, "merge_adapter", False):
            # not the task's own folder again (complete is read by the shipped extraction adapter itself)
            adapters.update({k: v for k, v in td.adapters(task_options(args, td), args.model).items()
                             if Path(v).resolve() != Path(args.adapter).resolve()})
        adapters[task] = args.adapter
    config = EngineConfig(
        model=args.model, grammar=args.grammar, batch_size=args.batch_size, threads=args.threads,
        dtype=args.dtype, device=getattr(args, "device", "auto"), adapters=adapters,
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
