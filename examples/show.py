"""Print `make demo`'s results as a person reads them: one line per product and task."""

import json
import sys


def line(rec: dict) -> str:
    if not rec.get("ok"):
        return f"{rec['id']}: error: {rec['error']}"
    if rec["task"] == "extract":
        return f"{rec['id']}: " + ", ".join(f"{a['name']}={a['value']}" for a in rec["attributes"])
    if rec["task"] == "classify":
        flag = "  (needs review)" if rec["needs_review"] else ""
        return f"{rec['id']}: {' > '.join(rec['path'])}  {rec['confidence']:.2f}{flag}"
    if rec["task"] == "normalize":
        return f"{rec['id']}: {rec['attributes']}"
    if rec["task"] == "rank":
        q = f" for {rec['query']!r}" if rec.get("query") else ""
        return f"{rec['id']}{q}: " + ", ".join(f"{r['name']} {r['weight']:.2f}" for r in rec["ranking"])
    return json.dumps(rec)


for path in sys.argv[1:]:
    print(f"--- {path}")
    for raw in open(path, encoding="utf-8"):
        print("  " + line(json.loads(raw)))
