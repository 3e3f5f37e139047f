"""LoRA adapter checks: what vLLM and the engine can load."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from engine.errors import EngineError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# the adapters facet ships (package data; rebuilt by `make adapters` / `facet train default --which NAME`):
# engine/shipped/<task> is a single-task adapter, used for that task. engine/shipped/default, when present, is a
# multi-task one used for the tasks no single-task adapter covers; facet ships none now (each single-task adapter
# measured better on its task, docs/benchmarks.md). Every task uses them unless told otherwise (--adapter none /
# Engine(adapter=None) for the base model, --adapter PATH to replace them).
SHIPPED_ROOT = Path(__file__).parent / "shipped"
SHIPPED_ADAPTER = SHIPPED_ROOT / "default"
# labelled titles (PriceRunner and OA-Mine on Shopify's paths) whose nearest neighbours vote in classification beside
# the model (prompts/neighbours.py): shipped with the classification adapter, written by `facet train default`
SHIPPED_LABELLED = SHIPPED_ROOT / "classify" / "labelled_titles.jsonl.gz"
DEFAULT = "default"  # the value of --adapter / Engine(adapter=) that asks for the shipped adapters
# tasks whose shipped adapter also answers prompts that carry demonstrations (--examples), where it measured better
# than the base model with the same demonstrations (docs/benchmarks.md). None now: every shipped adapter was trained
# without demonstrations, and given some they leave the answer to the base model unless asked (--adapter default).
# Extraction was here until its adapter was retrained on all layers: with 3 demonstrations the shipped adapter (two
# epochs) is below the base model out of its domain (WDC-PAVE 0.319 against 0.413) and below itself without them in
# its domain (OA-Mine, first 100 titles: 0.651 against 0.741), so a user's demonstrations go to the base model.
WITH_DEMONSTRATIONS: frozenset[str] = frozenset()
NONE = "none"  # --adapter none: the base model
# tasks with no shipped adapter of their own that run with another task's, asked with the prompt it was trained on:
# completion reads each product with the extraction adapter (prompts/tasks/complete.py), which measured better than
# the adapter trained on completion prompts that facet shipped before (docs/benchmarks.md)
SHIPPED_FOR = {"complete": "extract"}


def shipped_folders() -> list[Path]:
    """The shipped adapter folders, single-task ones first (they win for their task), the multi-task one last."""
    if not SHIPPED_ROOT.is_dir():
        return []
    single = sorted(p for p in SHIPPED_ROOT.iterdir() if p.is_dir() and p.name != DEFAULT and _trained_tasks(str(p)))
    return single + ([SHIPPED_ADAPTER] if _trained_tasks(str(SHIPPED_ADAPTER)) else [])


def shipped_adapter_for(task: str) -> Path | None:
    """The shipped adapter a task runs with (its own, else the one ``SHIPPED_FOR`` names), or None."""
    own = next((p for p in shipped_folders() if task in _trained_tasks(str(p))), None)
    return own if own is not None or task not in SHIPPED_FOR else shipped_adapter_for(SHIPPED_FOR[task])


def local_folder(adapter: str | Path) -> Path:
    """The folder an adapter's files are in: ``adapter`` itself, or, for a name `facet serve` serves a shipped adapter
    under (its folder's name, ``--backend openai --adapter extract``), that shipped folder."""
    served = SHIPPED_ROOT / str(adapter)
    return served if not Path(adapter).is_dir() and served.is_dir() else Path(adapter)


def is_shipped(path: str | Path | None) -> bool:
    return path is not None and Path(path).resolve().parent == SHIPPED_ROOT.resolve()


def shipped_tasks(path: str | Path | None = None) -> tuple[str, ...]:
    """The tasks the adapter at ``path`` was trained on; without a path, those of all shipped adapters together
    (() when none is there)."""
    if path is not None:
        return _trained_tasks(str(path))
    return tuple(dict.fromkeys(t for p in shipped_folders() for t in _trained_tasks(str(p))))


@functools.cache
def _trained_tasks(folder: str) -> tuple[str, ...]:  # read once per folder: asked by every task call
    try:
        prov = json.loads((Path(folder) / "facet_provenance.json").read_text())
    except (OSError, ValueError):
        return ()
    return tuple(prov.get("tasks") or (prov.get("task"),))


def resolve_adapter(adapter: str | Path | None, task: str, model: str | None = None) -> str | None:
    """The adapter folder a task runs with: ``default`` (or nothing given) -> the shipped adapter trained on
    ``task`` when ``model`` is the default model it was trained for, else none; ``none`` -> none (the base
    model); anything else is a path or a served name, kept as it is."""
    from engine.models import DEFAULT_MODEL

    if adapter is None or str(adapter) == DEFAULT:
        if model is not None and str(model) != DEFAULT_MODEL:
            return None
        path = shipped_adapter_for(task)
        return str(path) if path is not None else None
    if str(adapter).lower() == NONE:
        return None
    return str(adapter)


def check_known(requests, known, how: str = "pass it with --adapter NAME=PATH") -> None:
    """Raise one clear EngineError for the first request naming an adapter that is not in ``known``."""
    for r in requests:
        if r.adapter is not None and r.adapter not in known:
            names = ", ".join(sorted(known)) or "none"
            raise EngineError(f"unknown adapter {r.adapter!r} (loaded: {names}); {how}")


def adapter_problems(config: dict) -> list[str]:
    """Reasons an adapter config cannot be served by vLLM (empty list = compatible)."""
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, only LORA is served")
    if config.get("use_dora"):
        problems.append("DoRA (use_dora=true) is not supported by vLLM")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config.get('bias')!r}; vLLM needs bias='none'")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config.get('modules_to_save')!r}; vLLM cannot load them")
    if config.get("r") not in VLLM_RANKS:
        problems.append(f"rank r={config.get('r')} is not one of vLLM's ranks {VLLM_RANKS}")
    return problems


def check_adapter(path: str | Path, model=None) -> dict:
    """Validate an adapter folder; raise one clear EngineError naming the problem and the fix."""
    path = Path(path)
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise EngineError(
            f"{path} is not a LoRA adapter folder (no adapter_config.json). "
            f"Train one with `facet train extract ... -o {path}`."
        )
    config = json.loads(cfg_file.read_text())
    problems = adapter_problems(config)
    if problems:
        raise EngineError(f"adapter {path} is not servable: " + "; ".join(problems))
    if model is not None:
        base = getattr(getattr(model, "config", None), "hidden_size", None)
        prov = path / "facet_provenance.json"
        if prov.is_file() and base is not None:
            hidden = json.loads(prov.read_text()).get("base_hidden_size")
            if hidden is not None and hidden != base:
                raise EngineError(
                    f"adapter {path} was trained for a base model with hidden size {hidden}, "
                    f"but the loaded model has {base}; pass the matching --model."
                )
    return config


def trained_attributes(adapter: str | Path | None) -> Path | None:
    """The attribute list a schema-guided adapter was trained on (its ``attributes.json``), or None."""
    path = Path(adapter) / "attributes.json" if adapter else None
    return path if path is not None and path.is_file() else None
