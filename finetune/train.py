"""A plain LoRA training loop, top to bottom.

build LoraConfig -> get_peft_model -> AdamW with warm-up and linear decay -> loss on answer tokens
-> validation loss each epoch -> keep the best adapter, stop early when it stops improving ->
save the adapter (standard PEFT format, vLLM-compatible) with its provenance. A checkpoint after
each epoch lets an interrupted run continue with ``--resume``.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.adapters import VLLM_RANKS, adapter_problems
from prompts.tasks.base import build as build_task

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = "extract"
    model: str = "smollm2-135m"
    rank: int = 16
    layers: int | None = None  # LoRA on the top N decoder layers only (the backward pass stops below them)
    alpha: int | None = None  # default 2 x rank
    dropout: float = 0.05
    lr: float = 3e-4
    epochs: float = 3
    batch_size: int = Field(default=8, ge=1)
    warmup: float = 0.06
    weight_decay: float = 0.0
    max_len: int = 512
    max_steps: int | None = None
    patience: int = 1
    val_fraction: float = 0.1
    seed: int = 0
    threads: int | None = None
    augment: int = 0  # changed copies per training record (finetune.data.augment)
    checkpoint_every: int = 20  # steps between checkpoints (resume loses at most this many)
    bf16: bool = False  # bf16 autocast: measured >5x SLOWER than fp32 on this 2-core CPU (see README); use on GPUs
    device: str = "auto"  # 'auto': a CUDA GPU when visible, else the CPU
    batching: Literal["length", "random", "pack"] = "length"  # how records form a step (epoch_plan)
    # the learning rate over the steps (lr_factor): "linear", one warm-up and a linear decay to 0 over the whole run;
    # "restart", the same warm-up and decay within every epoch (warm restarts), so that epoch 1 of a longer run is
    # exactly a one-epoch run and a one-epoch checkpoint can be resumed into a second epoch
    schedule: Literal["linear", "restart"] = "linear"

    def lora_alpha(self) -> int:
        return self.alpha or 2 * self.rank


def lora_config(cfg: TrainConfig, n_layers: int | None = None):
    from peft import LoraConfig

    if cfg.rank not in VLLM_RANKS:
        raise ValueError(f"--rank {cfg.rank} cannot be served by vLLM; use one of {VLLM_RANKS}")
    extra = {}
    if cfg.layers:
        if n_layers is None or not 0 < cfg.layers <= n_layers:
            raise ValueError(f"--layers {cfg.layers}: the model has {n_layers} decoder layers")
        extra = {"layers_to_transform": list(range(n_layers - cfg.layers, n_layers)), "layers_pattern": "layers"}
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha(), lora_dropout=cfg.dropout,
                      target_modules=list(TARGET_MODULES), bias="none", task_type="CAUSAL_LM", **extra)


def lr_factor(step: int, total: int, warmup: float, per_epoch: int, schedule: str = "linear") -> float:
    """The learning rate at optimizer step ``step`` (0-based) as a share of the peak: a linear warm-up over the
    first ``warmup`` share of the steps, then a linear decay to 0, over the whole run (``linear``) or within each
    epoch of ``per_epoch`` steps (``restart``)."""
    if schedule == "restart":
        step, total = step % per_epoch, min(per_epoch, total - step // per_epoch * per_epoch)
    warm = max(1, int(warmup * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def epoch_plan(lengths: list[int], size: int, rng: random.Random | None, batching: str = "length") -> list[list[int]]:
    """The records of one epoch as index lists, one per optimizer step. ``random``: shuffled, cut in steps;
    ``length`` (default): shuffled, then sorted by length within windows of 50 steps and the steps shuffled
    (little padding, the same records per epoch); ``pack``: the random steps, each step's records packed
    into rows (see ``_collate``). The random generator is drawn from the same way on every call, so a
    resumed run replays past epochs' plans and continues the same order."""
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
    if batching == "length":
        window = size * 50
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s : s + window], key=lambda i: lengths[i])]
    steps = [order[s : s + size] for s in range(0, len(order), size)]
    if batching == "length" and rng is not None:
        rng.shuffle(steps)
    return steps


def _rows(chunk: list[dict], pack: bool, pack_len: int = 512) -> list[list[dict]]:
    """The records of a step as rows: one each, or packed first-fit (longest first) into rows no longer
    than the step's longest record or ``pack_len`` tokens, whichever is more."""
    if not pack:
        return [[d] for d in chunk]
    cap = max(pack_len, max(len(d["input_ids"]) for d in chunk))
    rows: list[list[dict]] = []
    free: list[int] = []  # tokens left in each row
    for d in sorted(chunk, key=lambda d: -len(d["input_ids"])):
        m = len(d["input_ids"])
        r = next((r for r, f in enumerate(free) if m <= f), None)
        if r is None:
            rows.append([d])
            free.append(cap - m)
        else:
            rows[r].append(d)
            free[r] -= m
    return rows


def _collate(chunk: list[dict], pad_id: int, device="cpu", pack: bool = False, pack_len: int = 512) -> dict:
    """One step's tensors, padded on the right. Packed rows carry position ids that restart at every record
    and no attention mask, from which transformers builds a block-diagonal causal mask (records never see
    each other; ``use_cache=False`` is needed for that, a cache turns the detection off)."""
    import torch

    rows = _rows(chunk, pack, pack_len)
    n = max(sum(len(d["input_ids"]) for d in r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    pos = torch.arange(n).repeat(len(rows), 1)
    # per-token loss weights, only when some record carries a "weight" (the others weigh 1)
    weights = torch.ones((len(rows), n)) if any("weight" in d for d in chunk) else None
    for r, row in enumerate(rows):
        k = 0
        for d in row:
            m = len(d["input_ids"])
            ids[r, k : k + m] = torch.tensor(d["input_ids"])
            labels[r, k : k + m] = torch.tensor(d["labels"])
            mask[r, k : k + m] = 1
            pos[r, k : k + m] = torch.arange(m)
            if weights is not None:
                weights[r, k : k + m] = d.get("weight", 1.0)
            k += m
        pos[r, k:] = torch.arange(n - k) + (pos[r, k - 1] + 1)  # padding continues the last record
    batch = {"input_ids": ids, "labels": labels, "use_cache": False}
    if weights is not None:
        batch["weights"] = weights
    if pack:
        batch["position_ids"] = pos
    else:
        batch["attention_mask"] = mask
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


MIN_SHARED = 8  # tokens: a shorter common prefix is run with the rest


def shared_prefix(batch: dict) -> int:
    """How many leading tokens every row of a padded step has in common, up to the position before its first answer
    token (0 where fewer than ``MIN_SHARED``, for a single row, or for packed rows). Every prompt of a task starts
    with the same chat header and system prompt; run once per step instead of once per row, it leaves out 26 % of the
    extraction member's record tokens, 20 % of classification's and 52 % of ranking's in their length-grouped steps of
    8 (docs/benchmarks.md, "Training speed: the shared prefix")."""
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.shape[0] < 2 or "attention_mask" not in batch:
        return 0
    answer = labels != -100
    if not answer.any(dim=1).all():
        return 0
    # position first_answer - 1 predicts the first answer token: its logits are needed, so the prefix ends before it
    limit = min(int(batch["attention_mask"].sum(dim=1).min()), int(answer.float().argmax(dim=1).min()) - 1)
    if limit < MIN_SHARED:
        return 0
    differ = (ids[:, :limit] != ids[:1, :limit]).any(dim=0).nonzero()
    n = int(differ[0]) if len(differ) else limit
    return n if n >= MIN_SHARED else 0


def answer_loss(model, batch: dict, share_prefix: bool = True):
    """The mean cross-entropy of the answer tokens (labels other than -100), what ``model(**batch).loss`` gives, with
    the LM head applied only at the positions that predict an answer token in some row of the step: the prompt's
    positions need no logits, and the head (49,152 x 576 for SmolLM2) is a fifth of the model's multiply work per
    token, forward and backward (docs/benchmarks.md: training speed). With ``weights`` in the batch (records that
    carry a loss weight), each answer token's loss is scaled by its record's weight, still divided by the number of
    answer tokens: a record of weight 3 adds its gradient three times to the step's, at no extra cost (AdamW then
    scales the whole step, so this is not the same as three passes over it). The rows' common prefix
    (``shared_prefix``: the chat header and system prompt) runs once, as one row, its keys and values repeated for
    every row: the same loss and gradient (LoRA dropout then draws one mask for the prefix, not one per row)."""
    import torch

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
    target = batch["labels"][:, 1:]  # position p predicts token p + 1
    keep = (target != -100).any(dim=0).nonzero().squeeze(-1)
    shared = shared_prefix(batch) if share_prefix else 0
    if shared:  # the rows' common prefix runs once, as one row, and its keys and values serve every row
        ids = batch["input_ids"]
        cache = model(input_ids=ids[:1, :shared], use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
        inputs = {"input_ids": ids[:, shared:], "attention_mask": batch["attention_mask"], "past_key_values": cache,
                  "use_cache": True}
    # every answer position lies past the prefix (shared_prefix)
    logits = model(**inputs, logits_to_keep=keep - shared).logits
    if "weights" not in batch:
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), target[:, keep].flatten(),
                                                 ignore_index=-100)
    losses = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), target[:, keep].flatten(),
                                               ignore_index=-100, reduction="none")
    weights = batch["weights"][:, 1:][:, keep].flatten().to(losses.device)
    return (losses * weights).sum() / (target != -100).sum()


def evaluate_loss(model, data: list[dict], batch_size: int, pad_id: int, bf16: bool = False) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    device = model.device
    with torch.no_grad():
        for step in epoch_plan([len(d["input_ids"]) for d in data], batch_size, None, "length"):
            b = _collate([data[i] for i in step], pad_id, device)
            n = int((b["labels"][:, 1:] != -100).sum())
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                total += float(answer_loss(model, b)) * n
            count += n
    model.train()
    return total / max(1, count)


def _checkpoint(model, opt, sched, state: dict, ckpt: Path) -> None:
    """Everything needed to continue: adapter, optimizer, schedule, position in the data."""
    import torch

    model.save_pretrained(ckpt)
    torch.save(opt.state_dict(), ckpt / "optimizer.pt")
    torch.save(sched.state_dict(), ckpt / "scheduler.pt")
    tmp = ckpt / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(ckpt / "state.json")  # the state file is written last and atomically


def train(model, tokenizer, train_data: list[dict], val_data: list[dict], cfg: TrainConfig, out: Path,
          provenance: dict | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train LoRA on ``model`` (mutated: wrapped by PEFT) and save the best adapter in ``out``."""
    import torch
    from peft import get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    from engine.models import pick_device

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = torch.device(pick_device(cfg.device))
    model = get_peft_model(model.to(device), lora_config(cfg, model.config.num_hidden_layers))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, cfg.warmup, steps_per_epoch, cfg.schedule))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    lengths = [len(d["input_ids"]) for d in train_data]
    state = {"step": 0, "epoch": 0, "epoch_step": 0, "best_val": None, "bad_epochs": 0, "history": [],
             "train_seconds": 0.0, "train_tokens": 0}
    if resume and (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text())
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device))
        sched.load_state_dict(torch.load(ckpt / "scheduler.pt"))
        for _ in range(state["epoch"]):  # replay the past epochs' plans so the data order continues
            epoch_plan(lengths, cfg.batch_size, rng, cfg.batching)
        state.setdefault("epoch_step", 0)
        state.setdefault("train_tokens", 0)
        was, was_total = state.get("schedule"), state.get("total")
        if was and was != cfg.schedule:
            raise ValueError(f"{ckpt} was trained with --schedule {was}; resume it with the same schedule")
        if cfg.schedule == "linear" and was_total and was_total != total:
            print(f"facet: warning: the linear schedule was {was_total} steps long and is now {total}, so the learning "
                  "rate jumps where the run resumes (to add epochs to a finished run, train it with --schedule "
                  "restart)", file=sys.stderr)
        print(f"facet: resumed at step {state['step']} (epoch {state['epoch']})", file=sys.stderr)
    state["schedule"], state["total"] = cfg.schedule, total
    bar = tqdm(total=total, initial=state["step"], desc="train", unit="step", disable=not progress, file=sys.stderr)
    tokens, t0 = 0, time.perf_counter()
    t_ck = t0
    stop = False
    while state["step"] < total and not stop:
        for i, step in enumerate(epoch_plan(lengths, cfg.batch_size, rng, cfg.batching)):
            if i < state["epoch_step"]:
                continue  # resumed mid-epoch: these batches were already trained on
            b = _collate([train_data[j] for j in step], pad_id, device, pack=cfg.batching == "pack")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = answer_loss(model, b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["epoch_step"] = i + 1
            n_tokens = sum(lengths[j] for j in step)
            tokens += n_tokens
            state["train_tokens"] += n_tokens
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                state["train_seconds"] += time.perf_counter() - t_ck
                t_ck = time.perf_counter()
                _checkpoint(model, opt, sched, state, ckpt)
            el = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / el:.0f}")
            bar.update(1)
            if state["step"] >= total:
                break
        state["epoch"] += 1
        state["epoch_step"] = 0
        state["train_seconds"] += time.perf_counter() - t_ck
        tokens, t0 = 0, time.perf_counter()
        t_ck = t0
        val = evaluate_loss(model, val_data, cfg.batch_size, pad_id, cfg.bf16) if val_data else None
        state["history"].append({"epoch": state["epoch"], "step": state["step"], "val_loss": val})
        print(f"\nfacet: epoch {state['epoch']} step {state['step']} val_loss {val}", file=sys.stderr)
        if val is None or state["best_val"] is None or val < state["best_val"]:
            state["best_val"], state["bad_epochs"] = val, 0
            model.save_pretrained(out)
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] > cfg.patience:
                print("facet: validation loss stopped improving; stopping early", file=sys.stderr)
                stop = True
        _checkpoint(model, opt, sched, state, ckpt)
    bar.close()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    problems = adapter_problems(adapter_cfg)
    if problems:
        raise RuntimeError(f"trained adapter is not vLLM-compatible: {problems}")
    prov = {
        **(provenance or {}),
        "config": cfg.model_dump(),
        "base_hidden_size": model.base_model.model.config.hidden_size,
        "steps": state["step"],
        "epochs_run": state["epoch"],
        "best_val_loss": state["best_val"],
        "history": state["history"],
        "train_seconds": state["train_seconds"],
        # record tokens (padding not counted) per second of training steps, validation not included
        "train_tokens_per_s": state["train_tokens"] / max(1e-9, state["train_seconds"]),
        "train_records": len(train_data),
        "val_records": len(val_data),
    }
    (out / "facet_provenance.json").write_text(json.dumps(prov, indent=1))
    return prov


def _extract_data(args, cfg: TrainConfig):
    """(template, training pairs, validation pairs, files to save beside the adapter, provenance) for extract."""
    from eval.datasets import read_extraction_gold, schema_from_gold
    from eval.report import file_hash
    from finetune.data import DataReport, augment, extract_pairs

    rows = _read_training(read_extraction_gold, args.train)
    schema = None if args.attributes else schema_from_gold(rows)
    # with --examples, the prompts carry demonstrations, as at inference
    task = build_task("extract", **task_values(args, attributes=schema if schema is not None else args.attributes))
    train_rows, val_rows = _split(rows, cfg, args.val, read_extraction_gold)
    sources = {r.product.id: r.product.title for r in train_rows}
    report = DataReport()
    pairs = extract_pairs(task, train_rows, report, sources)
    if cfg.augment:
        extra = augment(train_rows, cfg.augment, cfg.seed)
        pairs += extract_pairs(task, extra, sources=sources)
        print(f"facet: augmentation added {len(pairs) - report.usable} variants (reordered parts, a value dropped "
              f"from the title, lower case)", file=sys.stderr)
    files = {}
    if schema is not None:
        files["attributes.json"] = json.dumps({c: [a.name for a in s] for c, s in schema.categories.items()}, indent=1)
    shots = {"shots": task.shots, "examples": str(args.examples), "examples_hash": file_hash(args.examples)} \
        if task.examples else {"shots": 0}
    return task.template, pairs, extract_pairs(task, val_rows), report, files, {"grounded": task.grounded, **shots}


def _complete_data(args, cfg: TrainConfig):
    """The same for complete: OA-Mine-style gold; per record one attribute hidden (``--augment N``: N more, in
    turn), the rest given as known, the prompt `facet complete` builds (attributes per category from --train,
    or --attributes), answer = the hidden value, null for every other attribute asked."""
    from eval.datasets import read_extraction_gold, schema_from_gold
    from finetune.data import DataReport, complete_pairs

    rows = _read_training(read_extraction_gold, args.train)
    schema = None if args.attributes else schema_from_gold(rows)
    task = build_task("complete", **task_values(args, examples=None,
                                                attributes=schema if schema is not None else args.attributes))
    train_rows, val_rows = _split(rows, cfg, args.val, read_extraction_gold)
    report = DataReport()
    pairs = complete_pairs(task, train_rows, report, copies=1 + cfg.augment, seed=cfg.seed)
    names = {c: [a.name for a in s] for c, s in task.attribute_schema.categories.items()}
    files = {"attributes.json": Path(args.attributes).read_text() if args.attributes else json.dumps(names, indent=1)}
    return task.template, pairs, complete_pairs(task, val_rows, seed=cfg.seed), report, files, {}


def _classify_data(args, cfg: TrainConfig):
    """The same for classify: one (prompt, answer) per taxonomy level of each labelled product. ``--holdout N``
    leaves out exactly the sample `facet eval classify --limit N --seed S` scores, and its product clusters."""
    from eval.datasets import read_classification_gold, split_by_group
    from finetune.data import DataReport, classify_pairs
    from schemas.taxonomy import Taxonomy

    rows = _read_training(read_classification_gold, args.train)
    taxonomy = Taxonomy.load(args.taxonomy) if args.taxonomy else Taxonomy([r.path for r in rows], "labels of data")
    held = 0
    if args.holdout:
        sample, rows = split_by_group(rows, args.holdout, args.seed)
        held = len(sample)
    if args.max_records and len(rows) > args.max_records:
        rows = random.Random(cfg.seed).sample(rows, args.max_records)
    train_rows, val_rows = _split(rows, cfg, args.val, read_classification_gold)
    task = build_task("classify", **task_values(args, examples=None, shots=0, taxonomy=taxonomy))
    report = DataReport()
    pairs = classify_pairs(task, train_rows, report)
    return task.template, pairs, classify_pairs(task, val_rows), report, {}, {
        "taxonomy": taxonomy.name, "holdout": held, "holdout_seed": args.seed if held else None}


def _rank_data(args, cfg: TrainConfig):
    """The same for rank: --train is a taxonomy folder with attributes (Shopify's: synthetic queries, one allowed
    value + the category name, answer = that value's attribute; --max-records of them, default 2000) or a JSONL of
    rank demonstrations ({title, attributes | rank, query, answer})."""
    from finetune.data import DataReport, rank_pairs, synthetic_rank_examples
    from prompts.tasks.rank import load_rank_examples

    report = DataReport()
    source = Path(args.train)
    if source.is_dir():
        examples = synthetic_rank_examples(source, args.max_records or 2000, cfg.seed, report)
    else:
        examples = _read_training(load_rank_examples, source)
        report.usable = len(examples)
    train_rows, val_rows = _split(list(examples), cfg, args.val, lambda path: list(load_rank_examples(path)))
    task = build_task("rank", **task_values(args, examples=None, shots=0, reasons="none"))  # as at inference
    return task.template, rank_pairs(task, train_rows, report), rank_pairs(task, val_rows), report, {}, {
        "synthetic_from": str(source) if source.is_dir() else None}


# task -> (its pair builder, whether it can train on prompts with demonstrations)
TRAINABLE = {"extract": (_extract_data, True), "classify": (_classify_data, False),
             "complete": (_complete_data, False), "rank": (_rank_data, False)}


def _read_training(reader, path) -> list:
    """The training rows, or a ValueError that names the file and what is wrong with it."""
    try:
        rows = reader(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot read training data {path}: {exc}") from None
    if not rows:
        raise ValueError(f"{path} holds no records; nothing to train on")
    return rows


def _split(rows: list, cfg: TrainConfig, val_path=None, reader=None) -> tuple[list, list]:
    """(training rows, validation rows): all of ``rows`` and ``reader(val_path)`` when a validation file is
    given, else a seeded ``val_fraction`` of ``rows`` held out."""
    if val_path:
        return rows, reader(val_path)
    rows = rows[:]
    random.Random(cfg.seed).shuffle(rows)
    k = max(1, int(len(rows) * cfg.val_fraction))
    return rows[k:], rows[:k]


# the training settings `facet train` takes as options whose None means "not given": the default then (TrainConfig's,
# or for `facet train default` the shipped member's)
GIVEN_SETTINGS = ("rank", "lr", "epochs", "layers", "schedule")


def given_settings(args, names: tuple[str, ...] = GIVEN_SETTINGS) -> dict:
    """The settings among ``names`` that ``args`` gives (not None), as TrainConfig fields."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def train_from_args(args: TrainJob, _cfg_cls=TrainConfig) -> int:
    import torch

    from engine.models import load_model, load_tokenizer, resolve_model
    from eval.report import file_hash, hardware
    from finetune.data import encode
    from prompts.render import template_hash

    cfg = TrainConfig(task=args.task, model=args.model, **given_settings(args),
                      batch_size=args.batch_size, max_steps=args.max_steps, seed=args.seed, threads=args.threads,
                      bf16=args.bf16, device=args.device,
                      batching=args.batching,
                      augment=args.augment,
                      max_len=args.max_len or (1024 if args.examples else 512))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    build, with_demonstrations = TRAINABLE[args.task]
    if args.examples and not with_demonstrations:
        able = ", ".join(f"`facet train {t}`" for t, (_, demos) in TRAINABLE.items() if demos)
        raise ValueError(f"--examples trains on prompts with demonstrations, which only {able} supports; leave it "
                         f"out for `facet train {args.task}`")
    template, pairs, val_pairs, report, files, extra = build(args, cfg)
    print(f"facet: training data {args.train}:\n{report.text()}", file=sys.stderr)
    if report.usable < 8:
        raise ValueError(f"only {report.usable} usable training records in {args.train}; need at least 8")
    folder = resolve_model(cfg.model)
    tok = load_tokenizer(folder)
    tok.padding_side = "right"
    train_data = [e for e in (encode(tok, m, a, cfg.max_len) for m, a in pairs) if e]
    val_data = [e for e in (encode(tok, m, a, cfg.max_len) for m, a in val_pairs) if e]
    if len(train_data) < len(pairs):
        print(f"facet: {len(pairs) - len(train_data)} records longer than {cfg.max_len} tokens skipped", file=sys.stderr)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    model = load_model(folder, "float32")
    prov = train(model, tok, train_data, val_data, cfg, out, resume=args.resume, provenance={
        "task": args.task, "base_model": str(folder), "template": template,
        "template_hash": template_hash(template), "train_data": str(args.train),
        "train_data_hash": file_hash(args.train), "val_data": str(args.val) if args.val else "10% of train",
        "hardware": hardware(), **extra})
    print(f"facet: adapter written to {out} ({prov['steps']} steps, {prov['train_seconds']:.0f}s, "
          f"{prov['train_tokens_per_s']:.0f} tokens/s, "
          f"best val loss {prov['best_val_loss']})", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class TrainJob:
    """What `facet train TASK` trains: the data, the output, the training settings (None: TrainConfig's default)
    and the task's prompt options (``prompt``: as its options dataclass names them; the rest keep their defaults).
    The pairs are rendered exactly as inference renders them for the base model being trained."""

    task: str
    train: str
    output: str
    model: str = "smollm2-135m"
    val: str | None = None
    attributes: str | None = None
    examples: str | None = None
    taxonomy: str | None = None
    holdout: int = 0
    max_records: int | None = None
    rank: int | None = None
    lr: float | None = None
    epochs: float | None = None
    layers: int | None = None
    batch_size: int = 8
    max_steps: int | None = None
    seed: int = 0
    threads: int | None = None
    bf16: bool = False
    device: str = "auto"
    batching: str = "length"
    schedule: str | None = None
    augment: int = 0
    max_len: int | None = None
    resume: bool = False
    prompt: dict = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: dict) -> TrainJob:
        """From a mapping with more keys (the CLI's options): this job's fields, and the rest as prompt options."""
        mine = {f.name for f in fields(cls)} - {"prompt"}
        return cls(**{k: v for k, v in values.items() if k in mine},
                   prompt={k: v for k, v in values.items() if k not in mine})


def task_values(args: TrainJob, **override) -> dict:
    """The task's option values for rendering its training prompts: the job's prompt options and overrides."""
    return {**args.prompt, "attributes": args.attributes, "examples": args.examples, "taxonomy": args.taxonomy,
            **override}
