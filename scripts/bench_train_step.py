"""Training speed, side by side: the training step facet takes (``finetune.train.answer_loss``: the LM head at the
answer positions only) against another, on the real pairs and LoRA of one member of the shipped set
(docs/benchmarks.md, "Training speed"). ``--against full``: the LM head at every position (``model(**batch).loss``,
what facet trained with until the twelfth session); ``--against unshared``: facet's step with every row run whole
(``answer_loss(..., share_prefix=False)``, what facet trained with until the sixteenth session: the rows' common
chat header and system prompt once per row); ``--against compile``: the same step through
``torch.compile(model, dynamic=True)`` (its first steps, compiling, are timed apart).

    python scripts/bench_train_step.py classify --steps 12 --threads 2
    python scripts/bench_train_step.py classify --steps 10 --against compile
    python scripts/bench_train_step.py extract --steps 12 --against unshared

The same steps (the member's first length-grouped steps) alternate between the two, forward + backward each, no
optimizer step (the weights stay as they are, so both see the same model); it prints tokens/s (record tokens, no
padding) for each, their ratio and the largest difference between the two losses.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path


def main() -> None:
    from finetune.default import SHIPPED_SET

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=[n for n in SHIPPED_SET if n != "default"])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--against", choices=("full", "unshared", "compile"), default="full")
    args = ap.parse_args()

    import torch
    from peft import get_peft_model

    from engine.models import load_model, load_tokenizer, resolve_model
    from finetune.default import build, encoded, member_recipe, member_training
    from finetune.train import TrainConfig, _collate, answer_loss, epoch_plan, lora_config

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(**member_training(args.which))
    folder = resolve_model(cfg.model)
    tok = load_tokenizer(folder)
    tok.padding_side = "right"
    built = build(Path(args.data), member_recipe(args.which))
    data = [e for pairs in built.pairs.values() for e in encoded(tok, pairs, cfg.max_len)]
    model = load_model(folder, "float32")
    model = get_peft_model(model, lora_config(cfg, model.config.num_hidden_layers))
    model.train()
    plan = epoch_plan([len(d["input_ids"]) for d in data], cfg.batch_size, random.Random(cfg.seed))[: args.steps]

    if args.against == "compile":
        compiled = torch.compile(model, dynamic=True)
        other, label = (lambda b: answer_loss(compiled, b)), "the same step, torch.compile(dynamic=True)"
        t = time.perf_counter()
        for step in plan[:3]:  # compiling: the first shapes
            answer_loss(compiled, _collate([data[j] for j in step], tok.pad_token_id)).backward()
            model.zero_grad(set_to_none=True)
        print(f"torch.compile: the first 3 steps took {time.perf_counter() - t:.0f} s (compiling)")
    elif args.against == "unshared":
        other, label = (lambda b: answer_loss(model, b, share_prefix=False)), "every row run whole (no shared prefix)"
    else:
        other, label = (lambda b: model(**b).loss), "LM head at every position"

    seconds, tokens, diff = {"other": 0.0, "answer": 0.0}, 0, 0.0
    for i, step in enumerate(plan):
        batch = _collate([data[j] for j in step], tok.pad_token_id)
        tokens += sum(len(data[j]["input_ids"]) for j in step)
        losses = {}
        for name, fn in (("other", other), ("answer", lambda b: answer_loss(model, b)))[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            loss = fn(batch)
            loss.backward()
            seconds[name] += time.perf_counter() - t
            model.zero_grad(set_to_none=True)
            losses[name] = float(loss.detach())
        diff = max(diff, abs(losses["other"] - losses["answer"]))
    other_s, answer_s = tokens / seconds["other"], tokens / seconds["answer"]
    print(f"{args.which}: {len(plan)} steps of {cfg.batch_size}, {tokens} record tokens, {args.threads} threads\n"
          f"  {label}: {other_s:.0f} tokens/s\n"
          f"  facet's step (LM head at answer positions only, shared prefix once): {answer_s:.0f} tokens/s\n"
          f"  ratio {answer_s / other_s:.2f}x; largest loss difference {diff:.2e}")


if __name__ == "__main__":
    main()
