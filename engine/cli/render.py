"""`facet render`: the exact prompt a task sends for one record, without running a model."""

from __future__ import annotations

import json
import sys

from engine.cli.options import add_all_task_options, setup_for, task_options
from engine.models import DEFAULT_MODEL


def add_render_command(sub) -> None:
    from prompts.tasks.base import REGISTRY

    p = sub.add_parser("render", help="print the exact prompt for one record (no model is run)")
    p.add_argument("input", help="JSONL products")
    p.add_argument("--line", type=int, default=None, help="line number of the record (default: the first)")
    p.add_argument("--format", choices=["text", "messages"], default="text",
                   help="'text': after the model's chat template (exactly what the model sees); 'messages': JSON")
    p.add_argument("--schema", action="store_true", help="also print the output constraint")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model whose chat template to apply")
    p.add_argument("--task", choices=list(REGISTRY), default="extract",
                   help="whose prompt (default extract; normalize: the first question the rules leave to the model)")
    p.set_defaults(func=cmd_render)
    add_all_task_options(p)


def cmd_render(args) -> int:
    from engine.io import read_products
    from prompts.render import template_hash
    from prompts.tasks.base import get

    td = get(args.task)
    opts = task_options(args, td)
    task = td.build(opts, setup_for(args, td.name))
    for ln in read_products(args.input):
        if args.line and ln.number != args.line:
            continue
        if ln.product is None:
            print(f"facet: line {ln.number}: {ln.error.reason}", file=sys.stderr)
            return 1
        shown = td.render(task, td.item(opts, dict(ln.raw) if td.reads == "record" else ln.product, ln.number))
        if shown.messages is None:
            print(f"facet: line {ln.number}: {shown.note}", file=sys.stderr)
            return 0
        if args.format == "messages":
            print(json.dumps(shown.messages, ensure_ascii=False, indent=2))
        else:
            from engine.chat import to_prompt_text
            from engine.models import load_tokenizer, resolve_model

            print(to_prompt_text(load_tokenizer(resolve_model(args.model)), shown.messages), end="")
        if args.schema and shown.constraint:
            print("\n" + shown.constraint)
        print(f"\n# template {task.template} sha256:{template_hash(task.template)}", file=sys.stderr)
        return 0
    print(f"facet: no record at line {args.line}", file=sys.stderr)
    return 1
