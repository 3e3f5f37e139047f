"""The one Jinja environment, and rendering templates into chat messages.

Templates emit chat turns with ``{% call message("user") %}...{% endcall %}``; the collected
turns are the prompt. Product text only ever enters as variables, so ``{{ 7*7 }}`` or a fake
``<|im_start|>`` inside a title comes out literally and cannot open a new turn. Templates given
by path (a user's own) render in a sandboxed environment with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from engine.types import Message

TEMPLATE_DIR = Path(__file__).parent / "templates"
ROLES = ("system", "user", "assistant")


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _configure(env: jinja2.Environment) -> jinja2.Environment:
    env.filters["tojson_compact"] = _tojson
    return env


_ENV = _configure(
    jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
)


@lru_cache(maxsize=64)
def _sandbox_template(path: str, mtime: float) -> jinja2.Template:
    env = _configure(
        SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
        )
    )
    return env.from_string(Path(path).read_text(encoding="utf-8"))


def get_template(name_or_path: str) -> jinja2.Template:
    """A built-in template by name (``extract.j2``) or a user template by path (sandboxed)."""
    path = Path(name_or_path)
    if path.suffix and path.is_file() and (path.parent.resolve() != TEMPLATE_DIR.resolve()):
        return _sandbox_template(str(path.resolve()), path.stat().st_mtime)
    try:
        return _ENV.get_template(path.name if path.parent == Path(".") else str(name_or_path))
    except jinja2.TemplateNotFound:
        builtin = ", ".join(sorted(p.name for p in TEMPLATE_DIR.glob("*.j2")))
        raise ValueError(
            f"template {name_or_path!r} not found: give a path to a .j2 file or one of: {builtin}"
        ) from None


def template_source(name_or_path: str) -> str:
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return (TEMPLATE_DIR / path.name).read_text(encoding="utf-8")


def template_hash(name_or_path: str) -> str:
    return hashlib.sha256(template_source(name_or_path).encode()).hexdigest()[:16]


def render_messages(name_or_path: str, **context: Any) -> list[Message]:
    """Render a template into chat messages."""
    messages: list[Message] = []

    def message(role: str, caller=None) -> str:
        if role not in ROLES:
            raise ValueError(f"message role must be one of {ROLES}, not {role!r}")
        if caller is None:
            raise ValueError('use message() as {% call message("user") %}...{% endcall %}')
        messages.append({"role": role, "content": caller().strip()})
        return ""

    template = get_template(name_or_path)
    try:
        leftover = template.render(message=message, **context)
    except jinja2.UndefinedError as exc:
        raise ValueError(f"template {name_or_path}: {exc} (variables given: {sorted(context)})") from None
    if leftover.strip():
        raise ValueError(
            f"template {name_or_path} has text outside {{% call message(role) %}} blocks: "
            f"{leftover.strip()[:80]!r}"
        )
    if not messages or messages[-1]["role"] != "user":
        raise ValueError(f"template {name_or_path} must end with a user message")
    return messages


def prompt_mismatch(adapter: str | Path, with_examples: bool, template: str | None = None,
                    task: str = "extract") -> str | None:
    """Why an extract adapter is about to be asked with prompts of another shape than it was trained on, or None:
    trained with demonstrations but asked without them (the other way round is allowed: demonstrations in front
    of a zero-shot adapter were measured), or rendered through a template whose text differs from its training
    template's (recorded as a hash in its provenance)."""
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
    def strip(src: str) -> str:
        return re.sub(r"\{#.*?#\}", "", src, flags=re.S)

    try:
        if not trained_template or template_hash(trained_template) != trained_hash:
            return False
        return strip(template_source(trained_template)) == strip(template_source(template))
    except (OSError, ValueError):
        return False
