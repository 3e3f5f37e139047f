"""scripts/split_by_cluster.py: the held-out part of a measurement-only training split shares no product cluster
with the part trained on, and the normalized twin is split along the same ids."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_whole_clusters_are_held_out_and_the_twin_follows(tmp_path):
    rows = [{"id": i, "cluster_id": float(i // 3), "input_title": f"offer {i}"} for i in range(30)]  # 10 clusters
    _write(tmp_path / "big.jsonl", rows)
    _write(tmp_path / "big_normalized.jsonl", [{**r, "normalized": True} for r in rows])
    out = tmp_path / "split"
    subprocess.run([sys.executable, str(ROOT / "scripts/split_by_cluster.py"), str(tmp_path / "big.jsonl"), str(out),
                    "--holdout", "7"], check=True, cwd=ROOT, capture_output=True)
    read = {n: [json.loads(x) for x in (out / f"{n}.jsonl").read_text().splitlines()]
            for n in ("train", "heldout", "train_normalized", "heldout_normalized")}
    held, train = read["heldout"], read["train"]
    assert len(held) == 9 and len(train) == 21  # 3 whole clusters: the first to reach 7 offers
    assert not {r["cluster_id"] for r in held} & {r["cluster_id"] for r in train}
    assert sorted(r["id"] for r in held + train) == list(range(30))  # nothing lost, nothing twice
    assert [r["id"] for r in read["heldout_normalized"]] == [r["id"] for r in held]
    assert [r["id"] for r in read["train_normalized"]] == [r["id"] for r in train]
