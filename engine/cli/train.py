"""`facet train`: fine-tune a LoRA adapter for one task, or rebuild the shipped adapters (`facet train default`)."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.cli.options import add_all_task_options
from engine.models import DEFAULT_MODEL


def add_train_command(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a LoRA adapter for a task, or rebuild the shipped one (default)")
    from finetune.default import SHIPPED_SET
    from finetune.train import TRAINABLE

    p.add_argument("task", choices=["default", *TRAINABLE],
                   help="'default' rebuilds one of the adapters facet ships (--which) from --data")
    p.add_argument("--data", default="../shared/data", metavar="DIR",
                   help="default: the data folder (oa-mine/, pricerunner/, shopify-taxonomy/; default ../shared/data)")
    p.add_argument("--which", choices=list(SHIPPED_SET), default=None,
                   help="default: which adapter to rebuild (without it: every adapter facet ships, one after the "
                   "other, each into OUTPUT/NAME): " + _members(SHIPPED_SET))
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
    p.add_argument("-o", "--output", help="adapter folder to write (default: with --which, engine/shipped/WHICH "
                   "inside the package; without it, a folder per shipped adapter under OUTPUT, default engine/shipped)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--epochs", type=float, default=None,
                   help="passes over the data (default 3; default: the member's, finetune/default.py)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4; default: the member's)")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default 16; default: the member's)")
    p.add_argument("--schedule", choices=("linear", "restart"), default=None,
                   help="learning rate: 'linear' (default) warms up, then decays to 0 over the whole run; 'restart' "
                   "does that within every epoch, so a finished run can be --resume'd with more --epochs "
                   "(default: the member's)")
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
    add_all_task_options(p)
    p.set_defaults(func=cmd_train, attributes=None, examples=None)


def _members(shipped_set: dict) -> str:
    from finetune.default import COMPARED, shipped_members

    ships = ", ".join(shipped_members())
    compared = " and ".join(f"'{k}' ({what})" for k, what in COMPARED.items())
    return (f"one task's own adapter, what ships ({ships}); or, measured against them and not shipped, {compared}. "
            f"`make adapters` rebuilds, scores and installs the shipped ones")


def cmd_train(args) -> int:
    from finetune.train import TrainConfig, train_from_args

    if args.task == "default":
        return _train_default(args)
    if not args.train or not args.output:
        raise ValueError(f"facet train {args.task} needs --train FILE (the training data) and -o FOLDER")
    from finetune.train import TrainJob

    return train_from_args(TrainJob.from_values(vars(args)), TrainConfig)


def _train_default(args) -> int:
    """The shipped set, or one adapter of it (--which), rebuilt from a data folder (see finetune/default.py)."""
    import torch

    from engine import adapters as shipped
    from finetune.default import SHIPPED_SET, shipped_members

    data = Path(args.data)
    if not (data / "oa-mine" / "train.jsonl").is_file():
        raise ValueError(f"{data} is not a data folder with oa-mine/, pricerunner/ and shopify-taxonomy/ "
                         f"(pass --data DIR)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.which:
        return _train_member(args, args.which, Path(args.output or shipped.SHIPPED_ROOT / args.which))
    if args.tasks:
        raise ValueError(f"--tasks narrows one adapter: give --which NAME too ({_members(SHIPPED_SET)})")
    root = Path(args.output or shipped.SHIPPED_ROOT)
    members = shipped_members()
    print(f"facet: rebuilding the shipped adapters ({', '.join(members)}) under {root}"
          f"{'; finished ones are kept' if args.resume else ''}", file=sys.stderr)
    for i, name in enumerate(members, 1):
        print(f"facet: [{i}/{len(members)}] {name}", file=sys.stderr)
        _train_member(args, name, root / name)
    return 0


def _train_member(args, name: str, out: Path) -> int:
    from finetune.default import member_recipe, member_training, train_default
    from finetune.train import GIVEN_SETTINGS, TrainConfig, given_settings

    cfg = TrainConfig(task="default", model=args.model, batch_size=args.batch_size, max_steps=args.max_steps,
                      seed=args.seed, threads=args.threads, bf16=args.bf16, device=args.device, batching=args.batching,
                      patience=args.patience, **{**member_training(name),  # the shipped member's settings
                                                 **given_settings(args, (*GIVEN_SETTINGS, "max_len"))})
    recipe = member_recipe(name, args.seed, tuple(args.tasks.split(",")) if args.tasks else None)
    command = " ".join(["facet", *sys.argv[1:]] if args.which else _member_command(sys.argv[1:], name, out))
    prov = train_default(Path(args.data), out, cfg, recipe, resume=args.resume, command=command)
    print(f"facet: {name}: adapter written to {out} ({prov['steps']} steps, {prov['train_seconds']:.0f}s, "
          f"{prov['train_tokens_per_s']:.0f} tokens/s, best val loss {prov['best_val_loss']})", file=sys.stderr)
    return 0


def _member_command(argv: list[str], name: str, out: Path) -> list[str]:
    """The one-adapter command (``--which NAME -o OUT``) that rebuilds what a whole-set run trained as ``name``."""
    kept, skip = [], False
    for a in argv:
        if skip or a.startswith("--output="):
            skip = False
            continue
        if a in ("-o", "--output"):
            skip = True
            continue
        kept.append(a)
    return ["facet", *kept, "--which", name, "-o", str(out)]
