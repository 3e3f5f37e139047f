#!/usr/bin/env bash
# Scores of every `facet eval` on fixed subsets of ../shared/data, for comparing two checkouts (a refactoring must
# leave them unchanged). Usage: scripts/eval_parity.sh CHECKOUT OUT_DIR   (run from anywhere; uses this venv)
# The adapters are given explicitly (the checkout's engine/shipped/TASK) so both sides use the same ones.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
D=$(cd "$here/../shared/data" && pwd)
A="$src/engine/shipped"
facet() { (cd "$src" && PYTHONPATH="$src" HF_HUB_OFFLINE=1 "$here/.venv/bin/python" -m engine.cli "$@"); }
facet eval extract --data "$D/oa-mine/validation.jsonl" --limit 24 --adapter "$A/extract" -o "$out/extract"
facet eval classify --data "$D/pricerunner/dev.csv" --limit 12 --label-map pricerunner-shopify --adapter "$A/classify" -o "$out/classify"
facet eval complete --data "$D/oa-mine/validation.jsonl" --limit 24 --adapter "$A/complete" -o "$out/complete"
facet eval normalize --data "$D/wdc-pave/train.jsonl" --limit 24 --adapter none -o "$out/normalize"
facet eval rank --data "$D/wands/query.csv" --limit 24 --adapter "$A/rank" -o "$out/rank"
facet eval query --limit 24 --adapter "$A/rank" -o "$out/query"
facet eval extract --data "$D/oa-mine/validation.jsonl" --limit 12 --examples "$D/oa-mine/train.jsonl" --adapter none \
  -o "$out/extract-3shot"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for d in sorted(p for p in out.iterdir() if (p / "report.json").is_file()):
    s = json.loads((d / "report.json").read_text())["summary"]
    print(d.name, json.dumps({k: v for k, v in s.items() if isinstance(v, (int, float))}, sort_keys=True))
PY
