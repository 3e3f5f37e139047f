"""Split a WDC-PAVE style JSONL (and its ``_normalized`` twin, when there is one) by product cluster.

    python scripts/split_by_cluster.py ../shared/data/wdc-pave/train_large.jsonl runs/wdc-large --holdout 200

writes OUT/train.jsonl and OUT/heldout.jsonl (plus OUT/train_normalized.jsonl and OUT/heldout_normalized.jsonl):
whole clusters, drawn in a seeded order, go to the held-out part until it has at least ``--holdout`` offers, so
no product of the held-out part has another offer in the training part. Lines are copied byte for byte. For
measurement: the output holds research-only data (WDC-PAVE); keep it under runs/ (git-ignored), never commit it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from prompts.formats import normalized_twin


def split(lines: list[str], holdout: int, seed: int, key: str = "cluster_id") -> tuple[set[str], int]:
    """The ids of the held-out offers (whole clusters, at least ``holdout`` offers) and how many clusters."""
    clusters: dict[str, list[str]] = {}
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        group = rec.get(key)
        clusters.setdefault(str(group if group is not None else f"line-{n}"), []).append(str(rec["id"]))
    order = sorted(clusters)
    random.Random(seed).shuffle(order)
    held: set[str] = set()
    taken = 0
    for c in order:
        if len(held) >= holdout:
            break
        held.update(clusters[c])
        taken += 1
    return held, taken


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="WDC-PAVE style JSONL (id, cluster_id, ...)")
    p.add_argument("out", type=Path, help="folder for train.jsonl / heldout.jsonl (+ their _normalized twins)")
    p.add_argument("--holdout", type=int, default=200, help="at least this many offers held out (whole clusters)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    lines = [ln for ln in args.data.read_text(encoding="utf-8").splitlines() if ln.strip()]
    held, n_clusters = split(lines, args.holdout, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    sources = [(args.data, "")]
    twin = normalized_twin(args.data)
    if twin.is_file():
        sources.append((twin, "_normalized"))
    for src, suffix in sources:
        parts: dict[str, list[str]] = {"train": [], "heldout": []}
        for ln in (x for x in src.read_text(encoding="utf-8").splitlines() if x.strip()):
            parts["heldout" if str(json.loads(ln)["id"]) in held else "train"].append(ln)
        for name, rows in parts.items():
            (args.out / f"{name}{suffix}.jsonl").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    print(f"{len(held)} offers of {n_clusters} clusters held out, {len(lines) - len(held)} to train on -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
