"""`facet eval NAME` (one subcommand per eval in eval/tasks.py, each with its task's options) and `facet compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.options import add_dataclass_options, add_model_options, backend_for, setup_for


def add_eval_commands(sub) -> None:
    from eval.tasks import EVALS
    from prompts.tasks.base import get

    p = sub.add_parser("eval", help="score a task on gold data (extraction: the published OA-Mine / WDC-PAVE metric, "
                       "exact-match micro-F1 over gold slots; see eval/metrics.py)",
                       description="Score a task on gold data; writes report.json and report.md (per attribute / "
                       "category, example mistakes, provenance with the command) into -o.",
                       epilog="examples:\n  facet eval extract --data ../shared/data/oa-mine/validation.jsonl\n"
                       "  facet eval classify --data ../shared/data/pricerunner/dev.csv --limit 200 --label-map "
                       "pricerunner-shopify\n  facet eval rank --data ../shared/data/wands/query.csv\n"
                       "  facet eval query --rules-only", formatter_class=argparse.RawDescriptionHelpFormatter)
    evals = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for ev in EVALS.values():
        e = evals.add_parser(ev.name, help=ev.help, description=ev.help)
        e.add_argument("-o", "--output", default="runs/eval", help="folder for report.json and report.md")
        add_dataclass_options(e, ev.options, "data")
        add_dataclass_options(e, get(ev.task).options, f"{ev.task} prompt")
        add_model_options(e)
        e.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from engine.config import grammar_engine
    from eval.tasks import EVALS, EvalContext
    from prompts.tasks.base import get, options_from

    ev = EVALS[args.task]
    td = get(ev.task)
    setup = setup_for(args, td.name)
    values = {k: v for k, v in vars(args).items() if k in td.options.__dataclass_fields__}
    ctx = EvalContext(
        name=ev.name, values=values, options=options_from(ev.options, vars(args)), setup=setup,
        backend=lambda: backend_for(args, td.name), batch_size=args.batch_size,
        prov={"model": args.model, "adapter_path": args.adapter, "examples": values.get("examples"),
              "grammar": grammar_engine(args.grammar, getattr(args, "backend", "transformers"))},
        build=lambda vals: td.build(options_from(td.options, vals), setup))
    report = ev.run(ctx)
    out = write_report(args.output, report, ev.markdown)
    extra = ev.after(report, out) if ev.after else []
    print(f"{ev.line(report)}  -> {out}/report.md" + "".join(f", {name}" for name in extra))
    return 0


def write_report(folder, report: dict, markdown) -> Path:
    """report.json and report.md (``markdown(report)``) into ``folder``; the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(markdown(report))
    return out


def add_compare_command(sub) -> None:
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
