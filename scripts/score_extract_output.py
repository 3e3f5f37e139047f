"""Score the records a `facet extract` run wrote (a JSONL file, or a folder of Ray partitions in either format)
against gold data, with the metric `facet eval extract` uses: so a Ray job's accuracy can be set beside the local
run's.

    python scripts/score_extract_output.py ../shared/data/oa-mine/validation.jsonl runs/ray/w2
    python scripts/score_extract_output.py --attributes-from ../shared/data/oa-mine/train.jsonl OUT.json  # writes
        the per-category attribute list `facet eval extract` asks for, for `facet extract --attributes OUT.json`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def records(output: Path) -> list[dict]:
    if output.is_file():
        return [json.loads(x) for x in output.read_text().splitlines() if x.strip()]
    out = [json.loads(x) for f in sorted(output.glob("part-*.jsonl")) for x in f.read_text().splitlines() if x.strip()]
    if any(output.glob("part-*.parquet")):
        import pyarrow.parquet as pq

        out += [json.loads(r) for r in pq.read_table(output)["record"].to_pylist()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gold", help="gold JSONL (OA-Mine / WDC-PAVE), or with --attributes-from the output file")
    p.add_argument("output", help="the run's output: a JSONL file or a folder of partitions")
    p.add_argument("--attributes-from", action="store_true", help="write the attribute list of GOLD to OUTPUT")
    args = p.parse_args(argv)
    from eval.datasets import read_extraction_gold, schema_from_gold
    from eval.metrics import score_extraction

    if args.attributes_from:
        schema = schema_from_gold(read_extraction_gold(args.gold))
        Path(args.output).write_text(json.dumps({c: [a.name for a in s] for c, s in schema.categories.items()},
                                                indent=1))
        return 0
    gold = read_extraction_gold(args.gold)
    got = {str(r["id"]): r for r in records(Path(args.output))}
    name = Path(args.gold).name
    # a gold row without an id of its own is the record the CLI names by its line: "N", or "FILE:N" through Ray
    keys = [next((k for k in (g.product.id, str(n), f"{name}:{n}") if k in got), None) for n, g in enumerate(gold, 1)]
    missing = [g.product.id for g, k in zip(gold, keys, strict=True) if k is None]
    preds = [{a["name"]: a["value"] for a in got[k]["attributes"]} if k is not None and got[k].get("ok") else None
             for k in keys]
    s = score_extraction([g.gold for g in gold], preds, [g.product.category for g in gold]).summary()
    print(json.dumps({"records": len(got), "missing": len(missing), **{k: s[k] for k in
                      ("micro_f1", "precision", "recall", "macro_f1", "failures")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
