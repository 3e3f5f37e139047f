"""Run a task over items: build requests, generate in batches, parse, re-ask only failures.

The runner never raises for one item: an item that still fails after ``retries`` re-asks comes
back as an :class:`ErrorRecord` carrying the reason and the model's raw answer. A truncated
answer is re-asked with twice the token budget; an invalid one is re-sampled (temperature 0.7).
Engine failures (:class:`EngineError`) do propagate: they concern the whole batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import ParseError
from engine.types import Backend, Completion, Request, ScoreRequest, ScoringBackend
from schemas import ErrorRecord


class Task(Protocol):
    name: str

    def build(self, item: Any) -> Request: ...

    def parse(self, completion: Completion, item: Any) -> Any: ...


@dataclass
class RunStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    extra: dict = field(default_factory=dict)

    def merge(self, other: RunStats) -> None:
        """Add a sub-run's calls, re-asks and tokens (its done/failed are counted by the caller)."""
        self.calls += other.calls
        self.retried += other.retried
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


def can_score(backend) -> bool:
    """Whether the backend can score given answers (transformers; vLLM unless its own CPU LoRA ops are in use)."""
    return isinstance(backend, ScoringBackend) and getattr(backend, "can_score", True)


def score_options(backend, questions: Sequence[tuple[Any, Sequence[str]]], adapter: str | None,
                  stats: RunStats) -> list[list[float]]:
    """Log-likelihood of every option as the answer to its prompt: one list per (prompt, options), one call."""
    reqs, spans = [], []
    for prompt, options in questions:
        spans.append((len(reqs), len(options)))
        reqs += [ScoreRequest(prompt, o, adapter) for o in options]
    logps = backend.score(reqs) if reqs else []
    stats.calls += 1
    return [list(logps[s : s + n]) for s, n in spans]


def softmax(xs: Sequence[float]) -> list[float]:
    import math

    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    total = sum(e)
    return [x / total for x in e]


def _retry_request(req: Request, completion: Completion) -> Request:
    if completion.finish_reason == "length":
        return dataclasses.replace(req, max_new_tokens=min(4 * req.max_new_tokens, req.max_new_tokens * 2))
    return dataclasses.replace(req, temperature=0.7)


def run_task(
    backend: Backend,
    task: Task,
    items: Sequence[Any],
    *,
    retries: int = 1,
    stats: RunStats | None = None,
) -> list[Any]:
    """Results in the order of ``items``: the task's output, or an ErrorRecord."""
    stats = stats if stats is not None else RunStats()
    results: list[Any] = [None] * len(items)
    requests: dict[int, Request] = {}
    for i, item in enumerate(items):
        try:
            requests[i] = task.build(item)
        except (ValueError, ParseError) as exc:  # e.g. a template error for this item
            results[i] = ErrorRecord(id=getattr(item, "id", None), task=task.name, error=str(exc))
            stats.failed += 1
    pending = sorted(requests)
    for attempt in range(retries + 1):
        if not pending:
            break
        completions = backend.generate([requests[i] for i in pending])
        stats.calls += 1
        failed = []
        for i, comp in zip(pending, completions, strict=True):
            stats.prompt_tokens += comp.prompt_tokens
            stats.completion_tokens += comp.completion_tokens
            try:
                results[i] = task.parse(comp, items[i])
                stats.done += 1
            except ParseError as exc:
                if attempt < retries:
                    requests[i] = _retry_request(requests[i], comp)
                    failed.append(i)
                    stats.retried += 1
                else:
                    results[i] = ErrorRecord(
                        id=getattr(items[i], "id", None), task=task.name, error=exc.reason, raw=exc.raw
                    )
                    stats.failed += 1
        pending = failed
    return results


def iter_task(
    backend: Backend,
    task: Task,
    items: Iterable[Any],
    *,
    chunk_size: int = 32,
    retries: int = 1,
    stats: RunStats | None = None,
) -> Iterator[Any]:
    """Stream results chunk by chunk, in input order (for progress bars and incremental output)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield from run_task(backend, task, chunk, retries=retries, stats=stats)
            chunk = []
    if chunk:
        yield from run_task(backend, task, chunk, retries=retries, stats=stats)
