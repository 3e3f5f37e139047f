"""The prompts facet sends, byte for byte: every task and template over the example files, against a committed
snapshot (tests/data/prompt_snapshots.json). A refactoring that changes one character of a prompt fails here;
a deliberate prompt change regenerates the snapshot:

    FACET_UPDATE_SNAPSHOTS=1 pytest tests/test_prompt_snapshots.py

No model is loaded (`facet render --format messages --schema`), so this runs in the default test run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "prompt_snapshots.json"
EX = "examples"

# name -> (input file, render options)
CASES = {
    "extract-open": ("products.jsonl", []),
    "extract-attributes": ("products.jsonl", ["--attributes", f"{EX}/attributes.json"]),
    "extract-3shot": ("products.jsonl", ["--attributes", f"{EX}/attributes.json",
                                         "--examples", f"{EX}/demonstrations.jsonl"]),
    "extract-free-1shot": ("products.jsonl", ["--examples", f"{EX}/demonstrations.jsonl", "--shots", "1", "--free"]),
    "extract-attributes-first": ("products.jsonl", ["--attributes", f"{EX}/attributes.json", "--template",
                                                    f"{EX}/extract_attributes_first.j2"]),
    "extract-clipped": ("products.jsonl", ["--max-input-chars", "30"]),
    "classify": ("products.jsonl", ["--task", "classify", "--taxonomy", f"{EX}/taxonomy.json"]),
    "classify-3shot": ("products.jsonl", ["--task", "classify", "--taxonomy", f"{EX}/taxonomy.json",
                                          "--examples", f"{EX}/labelled.jsonl"]),
    "complete": ("to_complete.jsonl", ["--task", "complete", "--attributes", f"{EX}/attributes.json"]),
    "normalize": ("to_normalize.jsonl", ["--task", "normalize", "--spec", f"{EX}/normalization.json"]),
    "rank": ("to_rank.jsonl", ["--task", "rank"]),
}


def _lines(path: Path) -> int:
    return sum(1 for ln in path.read_text().splitlines() if ln.strip())


def render_all(capsys) -> dict[str, str]:
    """Every case, every line of its input: the messages and the output constraint as `facet render` prints."""
    out = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for name, (file, opts) in CASES.items():
            for line in range(1, _lines(ROOT / EX / file) + 1):
                rc = main(["render", f"{EX}/{file}", "--line", str(line), "--format", "messages", "--schema", *opts])
                text = capsys.readouterr().out
                out[f"{name}:{line}"] = f"rc={rc}\n{text}"
    finally:
        os.chdir(cwd)
    return out


def test_rendered_prompts_are_byte_identical_to_the_snapshot(capsys):
    got = render_all(capsys)
    if os.environ.get("FACET_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
        pytest.skip(f"snapshot rewritten: {SNAPSHOT}")
    want = json.loads(SNAPSHOT.read_text())
    assert sorted(got) == sorted(want)
    changed = [k for k in want if got[k] != want[k]]
    assert not changed, f"prompts changed for {changed[:5]} (of {len(changed)}); first:\n{got[changed[0]]}"
    assert all(v.startswith("rc=0\n") for v in got.values())
    assert len(got) > 100  # every example line of every case, not an empty loop
