"""Transformers backend: batched generation with per-row grammar constraints and LoRA adapters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engine.backends.grammar import GrammarFactory, RowConstraints
from engine.chat import to_prompt_text
from engine.errors import EngineError
from engine.types import Completion, Request, ScoreRequest


class TransformersBackend:
    """Runs a Hugging Face causal LM (optionally a PEFT model holding several adapters).

    Requests are grouped by adapter, sorted by prompt length and cut into batches of
    ``batch_size``; every row gets its own constraint. Greedy unless a request sets a temperature.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        grammar_engine: str = "llguidance",
        batch_size: int = 16,
        adapters: dict[str, str] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.grammar = GrammarFactory(tokenizer, grammar_engine)
        self.adapters: dict[str, str] = {}
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.stop_ids = _stop_ids(model, tokenizer)
        for name, path in (adapters or {}).items():
            self.load_adapter(name, path)

    @property
    def name(self) -> str:
        return "transformers"

    def load_adapter(self, name: str, path: str) -> None:
        from engine.adapters import check_adapter

        check_adapter(path, self.model)
        from peft import PeftModel

        if not hasattr(self.model, "peft_config"):
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
        else:
            self.model.load_adapter(path, adapter_name=name)
        self.model.eval()
        self.adapters[name] = path

    def prompt_text(self, request: Request) -> str:
        if isinstance(request.prompt, str):
            return request.prompt
        return to_prompt_text(self.tokenizer, list(request.prompt))

    def _check_adapters(self, requests) -> None:
        for r in requests:
            if r.adapter is not None and r.adapter not in self.adapters:
                known = ", ".join(sorted(self.adapters)) or "none loaded"
                raise EngineError(
                    f"unknown adapter {r.adapter!r} (loaded: {known}); pass it with --adapter NAME=PATH"
                )

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Sum of log-probabilities of each continuation plus the end-of-turn token, in one pass per batch."""
        import torch

        self._check_adapters(requests)
        end = self.tokenizer.eos_token_id
        seqs = []
        for r in requests:
            p = self.tokenizer(self.prompt_text(r), add_special_tokens=False).input_ids
            c = self.tokenizer(r.continuation, add_special_tokens=False).input_ids + ([end] if end is not None else [])
            seqs.append((p, c))
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
        out = [0.0] * len(seqs)
        step = max(1, self.batch_size * 2)
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            width = max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
            ids = torch.full((len(idx), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                full = seqs[i][0] + seqs[i][1]
                ids[row, width - len(full) :] = torch.tensor(full)
                mask[row, width - len(full) :] = 1
            kwargs = {}
            if hasattr(self.model, "peft_config"):
                kwargs["adapter_names"] = [requests[i].adapter or "__base__" for i in idx]
            with torch.inference_mode():
                pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions as generate() sets them
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1)
            for row, i in enumerate(idx):
                n = len(seqs[i][1])
                targets = ids[row, width - n :]
                out[i] = float(logp[row, width - n - 1 : width - 1].gather(-1, targets[:, None]).sum())
        return out

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self._check_adapters(requests)
        texts = [self.prompt_text(r) for r in requests]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        order = sorted(range(len(requests)), key=lambda i: (requests[i].temperature, lengths[i]))
        out: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, c in zip(idx, self._generate_batch([requests[i] for i in idx], [texts[i] for i in idx])):
                out[i] = c
        return out  # type: ignore[return-value]

    def _generate_batch(self, requests: list[Request], texts: list[str]) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        procs = [self.grammar.processor(r.constraint) if r.constraint is not None else None for r in requests]
        max_new = max(r.max_new_tokens for r in requests)
        temperature = requests[0].temperature
        kwargs: dict[str, Any] = {}
        if hasattr(self.model, "peft_config"):
            kwargs["adapter_names"] = [r.adapter or "__base__" for r in requests]
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        want_lp = any(r.want_logprobs for r in requests)
        try:
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=max_new,
                    logits_processor=LogitsProcessorList([RowConstraints(procs, self.stop_ids)]),
                    eos_token_id=sorted(self.stop_ids),
                    pad_token_id=self.tokenizer.pad_token_id,
                    return_dict_in_generate=True,
                    output_scores=want_lp,
                    **kwargs,
                )
        except RuntimeError as exc:
            raise EngineError(f"generation failed: {exc}", retryable="out of memory" in str(exc)) from exc
        seqs = gen.sequences[:, enc.input_ids.shape[1] :]
        results = []
        for row, r in enumerate(requests):
            ids = seqs[row].tolist()
            finish = "length"
            n = len(ids)
            for j, t in enumerate(ids):
                if t in self.stop_ids:
                    finish, n = "stop", j
                    break
            if n > r.max_new_tokens:
                finish, n = "length", r.max_new_tokens
            logprobs = None
            if r.want_logprobs:
                logprobs = tuple(
                    (
                        self.tokenizer.decode([ids[j]]),
                        float(torch.log_softmax(gen.scores[j][row].float(), -1)[ids[j]]),
                    )
                    for j in range(n)
                )
                logprobs = tuple((t, lp if math.isfinite(lp) else -1e9) for t, lp in logprobs)
            results.append(
                Completion(
                    text=self.tokenizer.decode(ids[:n], skip_special_tokens=True),
                    finish_reason=finish,
                    prompt_tokens=int(enc.attention_mask[row].sum()),
                    completion_tokens=n,
                    logprobs=logprobs,
                )
            )
        return results


def _stop_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return ids
