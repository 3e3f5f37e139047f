"""The ``facet`` command, the composition root: every task command, `facet render` and `facet eval` are generated
from the task registry (prompts/tasks) and the eval table (eval/tasks.py); the other commands have a module each."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine.cli.serve import serve_client_hint  # noqa: F401  (public: the client options a server prints)

EPILOG = """examples:
  facet extract products.jsonl -o attrs.jsonl                 # the shipped adapter, open attributes
  facet extract products.jsonl -o attrs.jsonl --resume        # continue a killed run
  facet extract products.jsonl --attributes attrs.json --examples demos.jsonl -o out.jsonl
  facet classify products.jsonl -o cats.jsonl                 # into Shopify's product taxonomy
  facet rank examples/to_rank.jsonl --query 'blue velvet sofa'
  facet render products.jsonl --line 3 --examples demos.jsonl # print the exact prompt, no model
  facet eval extract --data ../shared/data/oa-mine/validation.jsonl
  facet compare zero-shot=runs/zs adapter=runs/adapter -o runs/compare   # side by side, with charts
  facet train default                                         # rebuild the shipped adapters from ../shared/data
  facet extract products.jsonl --backend vllm --merge-adapter -o out.jsonl
  facet extract big/ -o out/ --ray auto --workers 8           # a Ray cluster, resumable partitions
  facet serve                                                 # OpenAI-compatible vLLM server for many clients

input: JSON Lines, one product per line: {"id": "p1", "title": "...", "description": "...", "category": "..."}
       ("input"/"input_title" are accepted for the title). Bad lines become error records; the run goes on.
"""


def build_parser() -> argparse.ArgumentParser:
    from engine.cli.bench import add_bench_command
    from engine.cli.evaluate import add_compare_command, add_eval_commands
    from engine.cli.render import add_render_command
    from engine.cli.serve import add_serve_command
    from engine.cli.tasks import add_task_commands
    from engine.cli.train import add_train_command

    parser = argparse.ArgumentParser(
        prog="facet", description="Structured product attributes from messy product text, with a small LLM "
        "under grammar constraints.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_task_commands(sub)
    add_render_command(sub)
    add_eval_commands(sub)
    add_compare_command(sub)
    add_bench_command(sub)
    add_serve_command(sub)
    add_train_command(sub)
    return parser


def _quiet_libraries() -> None:
    """-q: no progress bars from the libraries either (transformers' weight loading, huggingface_hub)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm (>= 4.66) for every bar made after this
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars ("Loading weights")


def _default_adapter(args) -> None:
    """--adapter left out (or 'default'): the shipped adapter for the task, when the prompts carry no
    demonstrations or the task is in WITH_DEMONSTRATIONS; 'none': the base model. A server's adapters are names it
    serves, so the openai backend only takes 'none' from this."""
    from engine.adapters import NONE, WITH_DEMONSTRATIONS, resolve_adapter

    if args.command in ("serve", "train", "render") or not hasattr(args, "adapter"):
        return
    if getattr(args, "backend", "transformers") == "openai":
        if args.adapter and args.adapter.lower() == NONE:
            args.adapter = None
        return
    if args.command == "eval":
        from eval.tasks import EVALS

        task = EVALS[args.task].task
    else:
        task = {"bench": "extract"}.get(args.command, args.command)
    if args.adapter is None and getattr(args, "examples", None) and task not in WITH_DEMONSTRATIONS:
        # this task's shipped adapter was trained on prompts without demonstrations; with them the base model
        # answers, unless asked: --adapter default
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
