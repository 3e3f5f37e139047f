"""Transformers backend: batched generation with per-row grammar constraints and LoRA adapters."""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.backends.grammar import GrammarFactory, RowConstraints
from engine.chat import request_text
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

    def prompt_text(self, request: Request | ScoreRequest) -> str:
        return request_text(self.tokenizer, request)

    def _adapters_for(self, names: list[str | None]):
        """(context, generate kwargs) that run each row with its adapter. A batch with a single adapter
        (or none) switches the model to it, which is much faster than PEFT's per-row routing
        (``adapter_names``), kept for batches that really mix adapters."""
        from contextlib import nullcontext

        if not hasattr(self.model, "peft_config"):
            return nullcontext(), {}
        distinct = set(names)
        if len(distinct) > 1:
            return nullcontext(), {"adapter_names": [n or "__base__" for n in names]}
        (name,) = distinct
        if name is None:
            return self.model.disable_adapter(), {}
        self.model.set_adapter(name)
        return nullcontext(), {}

    def _check_adapters(self, requests) -> None:
        from engine.adapters import check_known

        check_known(requests, self.adapters)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Sum of log-probabilities of each continuation plus the end-of-turn token.

        Requests sharing a prompt (the choices of one question) share its forward pass: the prompt
        is encoded once and its KV cache is repeated for all continuations.
        """
        import torch

        self._check_adapters(requests)
        end = self.tokenizer.eos_token_id
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((self.prompt_text(r), r.adapter), []).append(i)
        out = [0.0] * len(requests)
        for (text, adapter), idx in groups.items():
            p = self.tokenizer(text, add_special_tokens=False).input_ids
            conts = [self.tokenizer(requests[i].continuation, add_special_tokens=False).input_ids
                     + ([end] if end is not None else []) for i in idx]
            n, width = len(conts), max(len(c) for c in conts)
            dev = self.model.device
            ids = torch.full((n, width), self.tokenizer.pad_token_id, dtype=torch.long)
            for row, c in enumerate(conts):
                ids[row, : len(c)] = torch.tensor(c)  # right padding: padded tail never affects real tokens
            ids = ids.to(dev)
            ctx, _ = self._adapters_for([adapter])
            with torch.inference_mode(), ctx:
                # the head only where it is read: the prompt's last position (a fifth of a token's work)
                first = self.model(input_ids=torch.tensor([p], device=dev), use_cache=True, logits_to_keep=1)
                head = torch.log_softmax(first.logits[0, -1].float(), -1)
                cache = first.past_key_values
                cache.batch_repeat_interleave(n)
                rest = self.model(
                    input_ids=ids,
                    attention_mask=torch.ones((n, len(p) + width), dtype=torch.long, device=dev),
                    position_ids=torch.arange(len(p), len(p) + width, device=dev).expand(n, -1),
                    past_key_values=cache,
                )
                logp = torch.log_softmax(rest.logits.float(), -1).cpu()
                head = head.cpu()
            for row, (i, c) in enumerate(zip(idx, conts, strict=True)):
                total = float(head[c[0]])
                for t in range(1, len(c)):
                    total += float(logp[row, t - 1, c[t]])
                out[i] = total
        return out

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self._check_adapters(requests)
        texts = [self.prompt_text(r) for r in requests]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        # same adapter together: a batch with one adapter runs without PEFT's per-row routing
        order = sorted(range(len(requests)),
                       key=lambda i: (requests[i].temperature, requests[i].adapter or "", lengths[i]))
        out: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, c in zip(idx, self._generate_batch([requests[i] for i in idx], [texts[i] for i in idx]), strict=True):
                out[i] = c
        return out  # type: ignore[return-value]

    def _generate_batch(self, requests: list[Request], texts: list[str]) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        procs = [self.grammar.processor(r.constraint) if r.constraint is not None else None for r in requests]
        max_new = max(r.max_new_tokens for r in requests)
        temperature = requests[0].temperature
        ctx, kwargs = self._adapters_for([r.adapter for r in requests])
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        want_lp = any(r.want_logprobs for r in requests)
        try:
            with torch.inference_mode(), ctx:
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
        seqs = gen.sequences[:, enc.input_ids.shape[1] :].cpu()
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
