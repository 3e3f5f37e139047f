#!/usr/bin/env bash
# GPU recipe for the extract adapter: train several LoRA settings, score each on OA-Mine validation,
# then time the best one. Usage: scripts/gpu_extract.sh DATA_DIR OUT_DIR [CONFIG...]
# DATA_DIR holds oa-mine/{train,validation}.jsonl. A CONFIG is NAME:RANK:EPOCHS:LR:AUGMENT (default below).
# Runs `facet` as `python3 -m engine.cli` so it works from a checkout without installing.
# EXAMPLES=FILE (and SHOTS, default 3) trains and scores with that many demonstrations per prompt from FILE.
set -uo pipefail
DATA=${1:?DATA_DIR}; OUT=${2:?OUT_DIR}; shift 2
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(r16e2:16:2:5e-4:0 r16e6:16:6:5e-4:0 r16e6a1:16:6:5e-4:1 r64e6a1:64:6:3e-4:1)
F="python3 -m engine.cli"
MODEL=${MODEL:-smollm2-135m}
EX=()
[ -n "${EXAMPLES:-}" ] && EX=(--examples "$EXAMPLES" --shots "${SHOTS:-3}")
mkdir -p "$OUT"
printf "config\trank\tepochs\tlr\taugment\ttrain_s\tmicro_f1\tP\tR\ts_per_product\n" >> "$OUT/summary.tsv"
for c in "${CONFIGS[@]}"; do
  IFS=: read -r name rank epochs lr aug <<< "$c"
  ad="$OUT/adapters/$name"
  t0=$(date +%s.%N)
  $F train extract --train "$DATA/oa-mine/train.jsonl" -o "$ad" --model "$MODEL" --rank "$rank" --epochs "$epochs" --lr "$lr" \
     --augment "$aug" --bf16 "${EX[@]}" > "$OUT/train_$name.log" 2>&1 || { echo "train $name failed"; tail -5 "$OUT/train_$name.log"; continue; }
  t1=$(date +%s.%N)
  $F eval extract --data "$DATA/oa-mine/validation.jsonl" --adapter "$ad" -o "$OUT/eval_$name" --model "$MODEL" \
     --batch-size 64 "${EX[@]}" > "$OUT/eval_$name.log" 2>&1 || { echo "eval $name failed"; tail -5 "$OUT/eval_$name.log"; continue; }
  python3 - "$OUT" "$name" "$rank" "$epochs" "$lr" "$aug" "$t0" "$t1" <<'PY'
import json, sys
out, name, rank, ep, lr, aug, t0, t1 = sys.argv[1:]
secs = float(t1) - float(t0)
r = json.load(open(f"{out}/eval_{name}/report.json"))
s = r["summary"]
row = [name, rank, ep, lr, aug, f"{float(secs):.0f}", f"{s['micro_f1']:.3f}", f"{s['precision']:.3f}",
       f"{s['recall']:.3f}", f"{r['seconds_per_product']:.3f}"]
open(f"{out}/summary.tsv", "a").write("\t".join(row) + "\n")
print("\t".join(row), flush=True)
PY
done
column -t "$OUT/summary.tsv"
