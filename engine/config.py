"""Engine configuration: frozen, and a typo in a field name fails loudly."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.models import DEFAULT_MODEL


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default=DEFAULT_MODEL, description="'smollm2-135m', an HF folder or a .gguf file")
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    base_url: str = Field(default="http://127.0.0.1:8000/v1", description="openai backend: the server's /v1 URL")
    api_key: str | None = Field(default=None, description="openai backend: bearer token, if the server wants one")
    concurrency: int = Field(default=8, ge=1, le=256, description="openai backend: requests in flight")
    schema_as: Literal["response_format", "grammar"] = Field(
        default="response_format", description="openai backend: JSON schemas as OpenAI's response_format (any "
        "server), or 'grammar': span schemas as facet's compact grammar (a vLLM server with xgrammar only)")
    grammar: Literal["llguidance", "xgrammar"] | None = Field(
        default=None, description="grammar engine; default llguidance for transformers (compiles in milliseconds), "
        "xgrammar for vllm (faster inside vLLM, measured); an openai server uses its own")
    batch_size: int = Field(default=16, ge=1, le=512)
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="transformers backend: 'auto' (a CUDA GPU when visible), 'cpu' or 'cuda[:N]'")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: all cores)")
    adapters: dict[str, str] = Field(default_factory=dict, description="adapter name -> PEFT folder")
    merge_adapter: bool = Field(default=False, description="vllm backend: serve the one adapter merged into the "
                                "weights (~1.2-1.3x the products/s of LoRA on the CPU build)")

    @property
    def grammar_engine(self) -> str | None:
        return grammar_engine(self.grammar, self.backend)


def grammar_engine(choice: str | None, backend: str) -> str | None:
    """The grammar engine a backend uses: ``choice`` when given, else the default measured faster there.
    Measured side by side here (48 titles, vLLM merged adapter, prefix cache reset before each run): inside
    vLLM xgrammar's constrained / free was 0.95-1.05 and llguidance's 0.87; the transformers backend builds one
    grammar per row per batch, where llguidance's millisecond compiles win (xgrammar: 30-80 ms; since then span
    schemas reach xgrammar as a compact grammar, ~5 ms, and transformers + xgrammar has not been re-measured)."""
    return choice or {"transformers": "llguidance", "vllm": "xgrammar"}.get(backend)


def load_backend(config: EngineConfig):
    """The one place that maps backend names to classes."""
    if config.backend == "transformers":
        import torch

        from engine.backends.transformers import TransformersBackend
        from engine.models import load_model, load_tokenizer, resolve_model

        if config.threads:
            torch.set_num_threads(config.threads)
        folder = resolve_model(config.model)
        return TransformersBackend(
            load_model(folder, config.dtype, config.device),
            load_tokenizer(folder),
            grammar_engine=config.grammar_engine,
            batch_size=config.batch_size,
            adapters=config.adapters,
        )
    if config.backend == "vllm":
        from engine.backends.vllm import VLLMBackend
        from engine.models import resolve_model

        return VLLMBackend(resolve_model(config.model), adapters=config.adapters, grammar=config.grammar_engine,
                           merge=config.merge_adapter)
    if config.backend == "openai":
        from engine.backends.openai import OpenAIBackend

        return OpenAIBackend(config.base_url, config.model, api_key=config.api_key,
                             concurrency=config.concurrency, adapters=config.adapters,
                             schema_as=config.schema_as)
    raise ValueError(f"unknown backend {config.backend!r}")


class LazyBackend:
    """Loads the backend on first use: rule-only work (most normalization) never loads a model."""

    def __init__(self, make):
        self._make, self._backend = make, None

    def __getattr__(self, name):
        if self._backend is None:
            self._backend = self._make()
        return getattr(self._backend, name)
