"""Side-by-side comparison of eval runs: one Markdown + JSON report and PNG charts.

Each run is a folder written by ``facet eval`` (its ``report.json``). The comparison shows the
summary of every run, per-attribute F1 side by side, and, against the first run (the baseline),
the slots each later run fixed and broke, so a prompt or adapter change can be judged at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.datasets import read_extraction_gold


def load_run(spec: str) -> tuple[str, dict]:
    """``LABEL=DIR`` or ``DIR`` (label = folder name); DIR holds report.json."""
    label, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no eval report here (run `facet eval ... -o {path}` first)")
    report = json.loads(file.read_text())
    if report.get("task", "extract") != "extract":
        raise ValueError(f"{file} is a `facet eval {report['task']}` report; facet compare compares extraction runs "
                         "(the slots each one fixed and broke). For other tasks read each report's report.md")
    return label or path.name, report


def slots_of(report: dict) -> list[dict]:
    """Per-slot outcomes; rebuilt from the predictions and the gold file for reports that lack them."""
    if report.get("slots"):
        return report["slots"]
    from eval.harness import slot_records

    gold = {r.product.id: r.gold for r in read_extraction_gold(report["data"])}
    out = []
    for pred in report["predictions"]:
        values = {a["name"]: a["value"] for a in pred.get("attributes", [])} if pred.get("ok") else None
        out += slot_records(pred["id"], gold.get(pred["id"], {}), values)
    return out


def describe(report: dict) -> str:
    prov = report.get("provenance", {})
    bits = [f"adapter {Path(prov['adapter_path']).name}" if prov.get("adapter_path") else "base model"]
    bits.append(f"{prov.get('shots', 0)}-shot" if prov.get("examples") else "zero-shot")
    bits.append(f"template {prov.get('template', '?')}@{str(prov.get('template_hash', ''))[:8]}")
    return ", ".join(bits)


def compare(runs: list[tuple[str, dict]], examples: int = 10) -> dict:
    summary = []
    for label, rep in runs:
        s = rep["summary"]
        summary.append({"run": label, "setup": describe(rep), "products": s["products"], "failures": s["failures"],
                        "precision": s["precision"], "recall": s["recall"], "micro_f1": s["micro_f1"],
                        "macro_f1": s["macro_f1"], "seconds_per_product": rep["seconds_per_product"],
                        "data_hash": rep.get("provenance", {}).get("data_hash"),
                        "command": rep.get("provenance", {}).get("command")})
    attrs: dict[str, dict[str, float]] = {}
    slots_count: dict[str, int] = {}
    for label, rep in runs:
        for a in rep["attributes"]:
            attrs.setdefault(a["attribute"], {})[label] = a["f1"]
            slots_count[a["attribute"]] = max(slots_count.get(a["attribute"], 0), a["slots"])
    per_attribute = [{"attribute": a, "slots": slots_count[a], **attrs[a]}
                     for a in sorted(attrs, key=lambda a: -slots_count[a])]
    diffs = []
    base_label, base = runs[0]
    base_slots = {(s["id"], s["attribute"]): s for s in slots_of(base)}
    for label, rep in runs[1:]:
        fixed, broken = [], []
        rep_slots = slots_of(rep)
        for s in rep_slots:
            b = base_slots.get((s["id"], s["attribute"]))
            if b is None or b["correct"] == s["correct"]:
                continue
            row = {"id": s["id"], "attribute": s["attribute"], "gold": s["gold"],
                   base_label: b["predicted"], label: s["predicted"]}
            (fixed if s["correct"] else broken).append(row)
        common = sum(1 for s in rep_slots if (s["id"], s["attribute"]) in base_slots)
        diffs.append({"run": label, "baseline": base_label, "common_slots": common, "fixed": len(fixed),
                      "broken": len(broken), "fixed_examples": fixed[:examples], "broken_examples": broken[:examples]})
    notes = []
    if len({(r["products"], r["data_hash"]) for r in summary}) > 1:
        notes.append("runs were scored on different data or subsets: compare their numbers with care")
    return {"runs": summary, "per_attribute": per_attribute, "diffs": diffs, "notes": notes}


def markdown(cmp: dict) -> str:
    lines = ["# facet eval comparison", ""]
    lines += [f"> note: {n}" for n in cmp["notes"]] + ([""] if cmp["notes"] else [])
    lines += ["| run | setup | products | failures | P | R | micro-F1 | macro-F1 | s/product |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in cmp["runs"]:
        lines.append(f"| {r['run']} | {r['setup']} | {r['products']} | {r['failures']} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | **{r['micro_f1']:.3f}** | {r['macro_f1']:.3f} | "
                     f"{r['seconds_per_product']:.2f} |")
    labels = [r["run"] for r in cmp["runs"]]
    lines += ["", "## F1 per attribute (most gold slots first)", "",
              "| attribute | slots | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for a in cmp["per_attribute"]:
        cells = [f"{a[label]:.2f}" if label in a else "–" for label in labels]
        lines.append(f"| {a['attribute']} | {a['slots']} | " + " | ".join(cells) + " |")
    for d in cmp["diffs"]:
        lines += ["", f"## {d['run']} vs {d['baseline']}: {d['fixed']} slots fixed, {d['broken']} broken "
                  f"(of {d['common_slots']} in common)", ""]
        for kind in ("fixed", "broken"):
            rows = d[f"{kind}_examples"]
            if not rows:
                continue
            lines += [f"{kind}:", "", f"| id | attribute | gold | {d['baseline']} | {d['run']} |", "|---|---|---|---|---|"]
            for x in rows:
                gold = " / ".join(x["gold"]) or "n/a"
                lines.append(f"| {x['id']} | {x['attribute']} | {gold} | {x[d['baseline']]} | {x[d['run']]} |")
            lines.append("")
    lines += ["", "## Commands", ""] + [f"- {r['run']}: `{r['command']}`" for r in cmp["runs"]]
    return "\n".join(lines) + "\n"


def charts(cmp: dict, out: Path, top: int = 15) -> list[Path]:
    """per_attribute_f1.png and score_vs_speed.png (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["run"] for r in cmp["runs"]]
    attrs = cmp["per_attribute"][:top]
    fig, ax = plt.subplots(figsize=(max(6, len(attrs) * 0.8), 4.5))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        xs = [i + k * width for i in range(len(attrs))]
        ax.bar(xs, [a.get(label, 0.0) for a in attrs], width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(attrs))])
    ax.set_xticklabels([f"{a['attribute']}\n({a['slots']})" for a in attrs], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.set_title("F1 per attribute (gold slots in brackets)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "per_attribute_f1.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in cmp["runs"]:
        ax.scatter(r["seconds_per_product"], r["micro_f1"], s=50)
        ax.annotate(r["run"], (r["seconds_per_product"], r["micro_f1"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlabel("seconds per product (log)")
    ax.set_ylabel("micro-F1")
    ax.set_ylim(0, 1)
    ax.set_title("accuracy vs speed")
    fig.tight_layout()
    paths.append(out / "score_vs_speed.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
