"""Eval reports: JSON for machines, Markdown for people, with provenance."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def provenance(**extra: Any) -> dict:
    return {
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "machine": platform.machine(),
        **extra,
    }


def extraction_markdown(report: dict) -> str:
    s = report["summary"]
    lines = [
        f"# extract eval: {report['data']}",
        "",
        "| products | failures | precision | recall | micro-F1 | macro-F1 | s/product |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['products']} | {s['failures']} | {s['precision']:.3f} | {s['recall']:.3f} | "
        f"**{s['micro_f1']:.3f}** | {s['macro_f1']:.3f} | {report['seconds_per_product']:.2f} |",
        "",
        "## Per attribute (worst first)",
        "",
        "| attribute | slots | P | R | F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for a in report["attributes"]:
        lines.append(f"| {a['attribute']} | {a['slots']} | {a['precision']:.2f} | {a['recall']:.2f} | {a['f1']:.2f} |")
    if report.get("categories"):
        lines += ["", "## Per category (worst first)", "", "| category | slots | P | R | F1 |", "|---|---:|---:|---:|---:|"]
        for c in report["categories"]:
            lines.append(f"| {c['category']} | {c['slots']} | {c['precision']:.2f} | {c['recall']:.2f} | {c['f1']:.2f} |")
    lines += ["", "## Example mistakes", "", "| title | attribute | gold | predicted |", "|---|---|---|---|"]
    for m in report["mistakes"]:
        gold = " / ".join(m["gold"]) if m["gold"] else "n/a"
        lines.append(f"| {m['title'][:70]} | {m['attribute']} | {gold} | {m['predicted']} |")
    lines += ["", "## Provenance", "", "```json", json.dumps(report["provenance"], indent=2), "```", ""]
    return "\n".join(lines)
