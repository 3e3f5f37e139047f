"""Eval reports: JSON for machines, Markdown for people, with provenance."""

from __future__ import annotations

import json
from pathlib import Path

from engine.provenance import file_hash, hardware, provenance  # noqa: F401 - re-exported


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
    if e2e := report.get("end_to_end"):
        t = e2e["summary"]
        lines += ["", f"## Extraction then normalization, end to end (gold: {e2e['data']})", "",
                  "| failures | precision | recall | micro-F1 | macro-F1 | normalization s |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {t['failures']} | {t['precision']:.3f} | {t['recall']:.3f} | **{t['micro_f1']:.3f}** | "
                  f"{t['macro_f1']:.3f} | {e2e['seconds']:.0f} |", "",
                  "| operation | slots | P | R | F1 |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {o['operation']} | {o['slots']} | {o['precision']:.2f} | {o['recall']:.2f} | {o['f1']:.2f} |"
                  for o in e2e["operations"]]
        lines += ["", "| title | attribute | gold | extracted | normalized |", "|---|---|---|---|---|"]
        for m in e2e["mistakes"]:
            gold = " / ".join(m["gold"]) if m["gold"] else "n/a"
            lines.append(f"| {m['title'][:60]} | {m['attribute']} | {gold} | {m['extracted']} | {m['predicted']} |")
    lines += ["", "## Provenance", "", "```json", json.dumps(report["provenance"], indent=2), "```", ""]
    return "\n".join(lines)


def classification_markdown(report: dict) -> str:
    s, rv = report["summary"], report["review"]
    levels = " / ".join(f"{a:.3f}" for a in s["level_accuracy"])
    lines = [
        f"# classify eval: {report['data']}", "",
        "| products | failures | accuracy | macro-F1 | per-level accuracy | s/product |",
        "|---:|---:|---:|---:|---|---:|",
        f"| {s['products']} | {s['failures']} | **{s['accuracy']:.3f}** | {s['macro_f1']:.3f} | {levels} | "
        f"{report['seconds_per_product']:.2f} |", "",
        f"needs_review (confidence < {rv['threshold']}): {rv['flagged']} flagged"
        + (f", {rv['flagged_accuracy']:.2f} of them correct" if rv["flagged_accuracy"] is not None else "")
        + f"; {rv['trusted']} not flagged"
        + (f", {rv['trusted_accuracy']:.2f} of them correct" if rv["trusted_accuracy"] is not None else ""),
        "", "## Per label", "", "| label | support | P | R | F1 |", "|---|---:|---:|---:|---:|",
    ]
    for lab, v in sorted(report["per_label"].items(), key=lambda kv: kv[1]["f1"]):
        lines.append(f"| {lab} | {v['support']} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} |")
    labels, m = report["confusion"]["labels"], report["confusion"]["matrix"]
    lines += ["", "## Confusion (rows gold, columns predicted)", "",
              "| gold \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for lab, row in zip(labels, m, strict=True):
        lines.append(f"| {lab} | " + " | ".join(str(x) for x in row) + " |")
    lines += ["", "## Example mistakes", "", "| title | gold | predicted | confidence |", "|---|---|---|---:|"]
    for x in report["mistakes"]:
        conf = f"{x['confidence']:.2f}" if x["confidence"] is not None else ""
        lines.append(f"| {x['title'][:70]} | {x['gold']} | {x['predicted']} | {conf} |")
    lines += ["", "## Provenance", "", "```json", json.dumps(report["provenance"], indent=2), "```", ""]
    return "\n".join(lines)


def confusion_png(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, m = report["confusion"]["labels"], report["confusion"]["matrix"]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.5 * len(labels)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"accuracy {report['summary']['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def normalization_markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# normalize eval: {report['data']}", "",
             "| products | failures | slots | precision | recall | micro-F1 | s/product |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| {s['products']} | {s['failures']} | {s['slots']} | {s['precision']:.3f} | {s['recall']:.3f} | "
             f"**{s['micro_f1']:.3f}** | {report['seconds_per_product']:.2f} |", "",
             "## Per normalization operation", "", "| operation | slots | P | R | F1 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {o['operation']} | {o['slots']} | {o['precision']:.3f} | {o['recall']:.3f} | {o['f1']:.3f} |"
              for o in report["operations"]]
    lines += ["", "## Who decided (value changes)", "", "| by | slots | accuracy |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['slots']} | {v['accuracy']:.3f} |" for k, v in report["deciders"].items()]
    lines += ["", "## Example mistakes", "", "| attribute | operation | raw | gold | predicted | by |",
              "|---|---|---|---|---|---|"]
    for m in report["mistakes"][:25]:
        lines.append(f"| {m['attribute']} | {m['operation']} | {m['raw']} | {' / '.join(m['gold'])} | "
                     f"{m['predicted']} | {m['by']} |")
    return "\n".join(lines) + "\n"


def ratio_text(x: float | None) -> str:
    """A ratio to three decimals, or n/a when there was nothing to divide by."""
    return "n/a" if x is None else f"{x:.3f}"


def completion_markdown(report: dict) -> str:
    s = report["summary"]
    f = ratio_text

    lines = [f"# complete eval: {report['data']}", "",
             "One gold attribute hidden per product (the others given as known); every attribute of the category "
             "asked for.", "",
             "| products | failures | fill accuracy | hidden recall | hidden abstained | abstention precision | "
             "false-fill rate | s/product |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {s['products']} | {s['failures']} | **{f(s['fill_accuracy'])}** | {f(s['hidden_recall'])} | "
             f"{s['hidden_abstained']} | {f(s['abstention_precision'])} | {f(s['false_fill_rate'])} | "
             f"{report['seconds_per_product']:.2f} |", "",
             f"Stated in the text: {s['stated']['filled']} fills, accuracy {f(s['stated']['accuracy'])}; inferred: "
             f"{s['inferred']['filled']} fills, accuracy {f(s['inferred']['accuracy'])}. Mean confidence of right "
             f"fills {f(s['mean_confidence_right'])}, of wrong fills {f(s['mean_confidence_wrong'])} "
             f"(abstain below {s['min_confidence']}); {s.get('hidden_withheld_right', 0)} hidden values were answered right "
             f"but withheld under that threshold.", "", "## Example mistakes", "",
             "| title | attribute | gold | predicted | confidence |", "|---|---|---|---|---:|"]
    for m in report["mistakes"]:
        lines.append(f"| {m['title'][:70]} | {m['attribute']} | {' / '.join(m['gold'])} | {m['predicted']} | "
                     f"{m['confidence']:.2f} |")
    return "\n".join(lines) + "\n"


def ranking_markdown(report: dict) -> str:
    s, k = report["summary"], report["k"]
    f = ratio_text
    skipped = ", ".join(f"{v} {r}" for r, v in report.get("skipped", {}).items()) or "none"
    lines = [f"# rank eval: {report['data']}", "",
             "Each query's class is matched to a Shopify category; the attributes to rank are that category's; the "
             "attributes the query mentions (by name, by one of their values, or a CSS colour name for a colour "
             f"attribute) are the relevant ones. Queries left out: {skipped}.", "",
             f"| ranker | NDCG@{k} | MRR | top-1 | cases | failures | s/product |", "|---|---:|---:|---:|---:|---:|---:|",
             f"| model | **{f(s[f'ndcg@{k}'])}** | **{f(s['mrr'])}** | {f(s['top1'])} | {s['cases']} | {s['failures']} "
             f"| {report['seconds_per_product']:.2f} |"]
    for name, b in report["baselines"].items():
        lines.append(f"| {name} (baseline) | {f(b[f'ndcg@{k}'])} | {f(b['mrr'])} | | {s['cases']} | | |")
    lines += ["", f"Mean attributes per case: {s['mean_attributes']:.1f}.", "",
              f"## Relevant attributes: how often in the model's top {k}", "", "| attribute | cases | in top k |",
              "|---|---:|---:|"]
    lines += [f"| {a['attribute']} | {a['cases']} | {f(a[f'in_top{k}'])} |" for a in report["attributes"][:20]]
    lines += ["", "## Example mistakes (top-1 not relevant)", "", "| query | category | relevant | predicted |",
              "|---|---|---|---|"]
    for m in report["mistakes"]:
        pred = m["predicted"] if isinstance(m["predicted"], str) else " > ".join(m["predicted"])
        lines.append(f"| {m['query']} | {m['category'].split(' > ')[-1]} | {', '.join(m['relevant'])} | {pred} |")
    return "\n".join(lines) + "\n"


def query_markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# Query understanding: {report['data']}", "",
             f"{s['queries']} searches, {s['phrases']} labelled phrases. Phrase accuracy **{s['accuracy']:.3f}**; "
             f"phrases that express an attribute: precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
             f"F1 {s['f1']:.3f}. {report['seconds_per_product']:.2f} s per search.", "",
             "## Mistakes", "", "| search | phrase | gold | predicted |", "|---|---|---|---|"]
    lines += [f"| {m['query']} | {m['phrase']} | {m['gold']} | {m['predicted']} |" for m in report["mistakes"]]
    return "\n".join(lines) + "\n"
