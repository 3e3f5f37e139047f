"""The engine's data types: requests with their output constraint as data, and completions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class JsonSchema:
    """Output must be JSON valid against ``schema`` (compact: no whitespace between tokens)."""

    schema: dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """Output must be exactly one of ``options``."""

    options: tuple[str, ...]


@dataclass(frozen=True)
class Regex:
    """Output must match ``pattern`` in full."""

    pattern: str


Constraint = JsonSchema | Choice | Regex


@dataclass(frozen=True)
class Request:
    prompt: str | tuple[Message, ...] | list[Message]
    constraint: Constraint | None = None
    max_new_tokens: int = 256
    adapter: str | None = None  # LoRA name; the backend resolves it
    temperature: float = 0.0  # 0 = greedy
    want_logprobs: bool = False


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # of the prompt tokens, how many a prefix cache served (backends that report it: vLLM)
    cached_prompt_tokens: int = field(default=0, compare=False)
    # per generated token: (token text, chosen log-probability), when asked for
    logprobs: tuple[tuple[str, float], ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probability of ``continuation`` (then end of turn) as the answer to ``prompt``."""

    prompt: str | tuple[Message, ...] | list[Message]
    continuation: str
    adapter: str | None = None


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...


# Optional abilities, each a Protocol checked with isinstance (not probed by attribute name where it is used)

@runtime_checkable
class ScoringBackend(Protocol):
    """Backends that can score given answers (used to rank a closed set of choices). One may still decline for
    its current configuration with ``can_score = False`` (vLLM's CPU LoRA ops)."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]: ...


@runtime_checkable
class TokenizingBackend(Protocol):
    """Backends that hold the model's tokenizer in this process (transformers, vLLM; not an OpenAI server)."""

    @property
    def tokenizer(self) -> Any: ...


@runtime_checkable
class PrefixCachingBackend(Protocol):
    """Backends with a prompt cache that outlives one call (vLLM): benchmarks reset it between the runs they
    compare."""

    def reset_prefix_cache(self) -> Any: ...


@runtime_checkable
class ClosableBackend(Protocol):
    """Backends holding an engine to shut down before another one starts (vLLM)."""

    def close(self) -> None: ...
