"""facet on a local Ray cluster (127.0.0.1, 2 workers): the same records as the local CLI, error records for bad
lines, and a killed job that resumes with nothing lost and nothing duplicated. Marked ``ray``; ``make test``
installs Ray and runs them (FACET_REQUIRE_RAY=1 turns a missing Ray into a failure)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    importlib.util.find_spec("ray") is None and os.environ.get("FACET_REQUIRE_RAY") != "1",
    reason="Ray is not installed (pip install 'facet[ray]')")]


def facet(*argv, timeout=600, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def records(folder: Path) -> list[dict]:
    return [json.loads(x) for f in sorted(folder.glob("part-*.jsonl")) for x in f.read_text().splitlines()]


@pytest.fixture()
def products(tmp_path):
    """24 products in two files, one of them with a line that is not JSON and one that is not UTF-8."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(2):
        lines = [json.dumps({"id": f"f{k}-p{i}", "title": f"Red cotton shirt size {i}"}) for i in range(12)]
        (folder / f"shard{k}.jsonl").write_bytes(("\n".join(lines) + "\n").encode())
    with (folder / "shard1.jsonl").open("ab") as fh:
        fh.write(b"this is not json\n")
        fh.write(b'{"id": "latin1", "title": "caf\xe9"}\n')
    return folder


def test_a_ray_job_writes_the_records_the_local_cli_writes(products, tmp_path, tiny_model_dir):
    common = ["--model", tiny_model_dir, "--max-new-tokens", "8", "-q"]
    local = tmp_path / "local.jsonl"
    for f in sorted(products.glob("*.jsonl")):  # the local CLI, file by file
        run = facet("extract", f, "-o", local, "--resume", *common)
        assert run.returncode == 0, run.stderr
    run = facet("extract", products, "-o", tmp_path / "out", "--ray", "auto", "--workers", "2",
                "--batch-size", "3", *common)
    assert run.returncode == 0, run.stderr
    got = {r["id"]: r for r in records(tmp_path / "out")}
    want = {r["id"]: r for r in map(json.loads, local.read_text().splitlines()) if r["ok"]}
    assert {k: v for k, v in got.items() if v["ok"]} == want  # same prompts, constraint, model: same answers
    bad = [r for r in got.values() if not r["ok"]]
    assert sorted(r["error"].split(": ", 1)[1].split(" ")[0] for r in bad) == ["invalid", "not"]  # UTF-8, JSON
    assert "24 done, 2 errors (2 bad input)" in run.stderr


def test_a_killed_job_resumes_with_no_record_lost_or_duplicated(products, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "engine.cli", "extract", str(products), "-o", str(out), "--ray", "auto",
            "--workers", "2", "--batch-size", "2", "--model", str(tiny_model_dir), "--max-new-tokens", "8", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    job = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("part-*.jsonl"))) < 2:
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and the local cluster it started, mid-run
    job.wait()
    first = records(out)
    assert 0 < len(first) < 26, "kill the job while partitions are still being written"
    run = facet("extract", products, "-o", out, "--ray", "auto", "--workers", "2", "--batch-size", "2",
                "--resume", "--model", tiny_model_dir, "--max-new-tokens", "8", "-q")
    assert run.returncode == 0, run.stderr
    ids = [r["id"] for r in records(out)]
    assert len(ids) == len(set(ids)) == 26  # 24 products + 2 bad lines, each once
    assert not list(out.glob(".*.tmp"))  # a half-written partition never counts (and is not left behind)


def test_without_resume_a_folder_with_partitions_is_refused(products, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-x-000000001-000000001.jsonl").write_text('{"id": "x", "ok": true}\n')
    run = facet("extract", products, "-o", out, "--ray", "auto", "--model", tiny_model_dir, "-q", timeout=120)
    assert run.returncode == 2 and "--resume" in run.stderr


def test_parquet_partitions_hold_every_record_and_resume_reads_them(products, tmp_path, tiny_model_dir):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    common = ["--ray", "auto", "--workers", "2", "--batch-size", "4", "--model", tiny_model_dir,
              "--max-new-tokens", "8", "-q", "--partitions", "parquet"]
    run = facet("extract", products / "shard1.jsonl", "-o", out, *common)
    assert run.returncode == 0, run.stderr
    table = pq.read_table(out)  # the folder of partitions reads as one table
    assert table.num_rows == 14 and set(table.column_names) == {"id", "ok", "task", "error", "record"}
    recs = [json.loads(r) for r in table["record"].to_pylist()]
    assert sum(not r["ok"] for r in recs) == 2 and all(r["id"] == i for r, i in zip(recs, table["id"].to_pylist(),
                                                                                     strict=True))
    run = facet("extract", products, "-o", out, "--resume", *common)  # the other file now; shard1 is done
    assert run.returncode == 0, run.stderr
    ids = pq.read_table(out)["id"].to_pylist()
    assert len(ids) == len(set(ids)) == 26 and "14 already done" in run.stderr
