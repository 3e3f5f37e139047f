"""LoRA adapter checks: what vLLM and the engine can load."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from engine.errors import EngineError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# the multi-task adapter facet ships (package data; rebuilt by `facet train default`): every task uses it
# unless told otherwise (--adapter none / Engine(adapter=None) for the base model, --adapter PATH to replace it)
SHIPPED_ADAPTER = Path(__file__).parent / "shipped" / "default"
DEFAULT = "default"  # the value of --adapter / Engine(adapter=) that asks for the shipped adapter
NONE = "none"  # --adapter none: the base model


def shipped_tasks(path: str | Path | None = None) -> tuple[str, ...]:
    """The tasks the shipped (multi-task) adapter (or the one at ``path``) was trained on; () when it is absent."""
    return _trained_tasks(str(path or SHIPPED_ADAPTER))


@functools.cache
def _trained_tasks(folder: str) -> tuple[str, ...]:  # read once per folder: asked by every task call
    try:
        prov = json.loads((Path(folder) / "facet_provenance.json").read_text())
    except (OSError, ValueError):
        return ()
    return tuple(prov.get("tasks") or (prov.get("task"),))


def resolve_adapter(adapter: str | Path | None, task: str, model: str | None = None) -> str | None:
    """The adapter folder a task runs with: ``default`` (or nothing given) -> the shipped adapter when it was
    trained on ``task`` and ``model`` is the default model it was trained for, else none; ``none`` -> none (the
    base model); anything else is a path or a served name, kept as it is."""
    from engine.models import DEFAULT_MODEL

    if adapter is None or str(adapter) == DEFAULT:
        ok = task in shipped_tasks() and (model is None or str(model) == DEFAULT_MODEL)
        return str(SHIPPED_ADAPTER) if ok else None
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


def prompt_mismatch(adapter: str | Path, with_examples: bool, template: str | None = None,
                    task: str = "extract") -> str | None:
    """Why an extract adapter is about to be asked with prompts of another shape than it was trained on, or None:
    trained with demonstrations but asked without them (the other way round is allowed: demonstrations in front
    of a zero-shot adapter were measured), or rendered through a template whose text differs from its training
    template's (recorded as a hash in its provenance)."""
    from prompts.render import template_hash

    try:
        prov = json.loads((Path(adapter) / "facet_provenance.json").read_text())
    except (OSError, ValueError):
        return None
    shots = prov.get("shots") or 0
    if shots and not with_examples:
        return (f"adapter {adapter} was trained with {shots} demonstrations per prompt from {prov.get('examples')}; "
                f"pass those examples (--examples / examples=) for the prompts it expects")
    trained = (prov.get("template_hashes") or {}).get(task) or prov.get("template_hash")
    trained_template = (prov.get("templates") or {}).get(task) or prov.get("template")
    if template is not None and trained:
        try:
            now = template_hash(template)
        except OSError:
            return None  # a missing template is reported where it is rendered
        if now != trained and not _same_but_comments(trained_template, trained, template):
            return (f"adapter {adapter} was trained on prompts from template {trained_template} "
                    f"(sha256 {trained}), but this run renders {template} (sha256 {now}): the adapter sees "
                    f"prompts laid out differently from its training; retrain it (facet train ...), or pass "
                    f"the template it was trained with (--template / template=)")
    return None


def _same_but_comments(trained_template: str | None, trained_hash: str, template: str) -> bool:
    """Whether the training template, still on disk as it was (same hash), differs from ``template`` only in
    Jinja comments, which render nothing."""
    from prompts.render import template_hash, template_source

    def strip(src: str) -> str:
        return re.sub(r"\{#.*?#\}", "", src, flags=re.S)

    try:
        if not trained_template or template_hash(trained_template) != trained_hash:
            return False
        return strip(template_source(trained_template)) == strip(template_source(template))
    except (OSError, ValueError):
        return False
