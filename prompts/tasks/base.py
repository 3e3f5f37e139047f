"""One task interface. A task is one module in ``prompts/tasks`` that registers a :class:`TaskDef`: its options
(a frozen dataclass whose field defaults are the only defaults), how it builds its task object from them, how it
reads an input record, renders its first prompt and runs over a batch. The CLI (`facet TASK`, `facet render`),
the Python API (``Engine``), eval and finetune all get tasks from :data:`REGISTRY`; nothing outside a task module
switches on a task's name. See docs/architecture.md for the checklist of adding one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from prompts.examples import ExamplePool
from schemas import AttributeSchema, Product, load_attribute_schema


def option(default: Any, help: str, *, flag: str | None = None, type: Callable | None = None,
           choices: Iterable[str] | None = None, metavar: str | None = None, cli: bool = True) -> Any:
    """A task option: a dataclass field whose metadata tells the CLI how to offer it (``--name-with-dashes``,
    its help; the default is shown from the field). ``cli=False``: Python API only (objects, not file paths)."""
    return field(default=default, metadata={"help": help, "flag": flag, "type": type, "metavar": metavar,
                                            "choices": tuple(choices) if choices else None, "cli": cli})


def template_option(default: str) -> Any:
    """The ``template`` option every task has: its built-in template's name by default."""
    return option(default, "built-in template name or a path to your own .j2")


def attribute_examples_option() -> Any:
    """The ``examples`` option of the tasks that answer with attribute values (extract, complete)."""
    return option(None, "few-shot pool: records with title, category and 'output' (or OA-Mine target_scores)",
                  metavar="JSONL")


def cli_options(options: type) -> list[tuple[str, Any, dict]]:
    """(flag, default, metadata) for each CLI-visible field of an options dataclass."""
    out = []
    for f in fields(options):
        meta = f.metadata
        if not meta or not meta.get("cli", True):
            continue
        default = None if f.default is MISSING else f.default
        out.append((meta.get("flag") or "--" + f.name.replace("_", "-"), default, {"dest": f.name, **meta}))
    return out


def options_from(options: type, values: dict[str, Any]) -> Any:
    """An options object from a mapping that may hold more keys (an argparse namespace's vars, keyword
    arguments): its own fields only; fields left out keep their defaults."""
    names = {f.name for f in fields(options)}
    return options(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class Setup:
    """What building a task needs besides its options: the adapter its requests are served by."""

    adapter: str | None = None  # the adapter folder (None: the base model); read for its provenance
    adapter_name: str | None = None  # the name its requests carry (how the backend serves it)
    merged: bool = False  # the adapter is merged into the served weights (the base model is not served)
    warn: Callable[[str], None] = field(default=lambda text: print(f"facet: warning: {text}", file=sys.stderr))
    note: Callable[[str], None] = field(default=lambda text: print(f"facet: {text}", file=sys.stderr))


@dataclass(frozen=True)
class Rendered:
    """A task's first prompt for one record, as `facet render` prints it."""

    messages: list[dict] | None  # None: no model question for this record (``note`` says why)
    constraint: str | None = None  # "# heading\nconstraint text"
    note: str | None = None


def product_item(options: Any, record: Any, index: int = 0) -> Product:
    return as_product(record, index)


@dataclass(frozen=True)
class TaskDef:
    """A registered task. ``run(backend, task, items, stats, state)`` yields one result (or ErrorRecord) per item,
    in order; ``prepare(options, items, setup)`` sees every input item first and returns ``(state, error
    records)`` (rank's behaviour events, extract's normalization step); ``item(options, record, index)`` turns an
    input record (a dict, or a Product when ``reads == "product"``) into the task's item, a ValueError making it
    an error record."""

    name: str
    help: str
    options: type
    build: Callable[[Any, Setup], Any]
    run: Callable[..., Iterator]
    render: Callable[[Any, Any], Rendered]
    item: Callable[[Any, Any, int], Any] = product_item
    prepare: Callable[[Any, list, Setup], tuple[Any, list]] | None = None
    reads: str = "product"  # "product": records validated as products first; "record": the raw dict
    # other adapters its requests name, served beside its own: (options, model) -> {name: folder}
    adapters: Callable[[Any, str | None], dict[str, str]] | None = None
    description: str = ""
    epilog: str = ""
    batch: str = "chunk"  # "chunk": run gets chunks of 2 x batch size; "batch": of batch size (scored tasks)


REGISTRY: dict[str, TaskDef] = {}


def register(task: TaskDef) -> TaskDef:
    """Add (or replace) a task; the CLI, ``Engine`` and eval pick it up by its name."""
    REGISTRY[task.name] = task
    return task


def get(name: str) -> TaskDef:
    import prompts.tasks  # noqa: F401  (the built-in tasks register on import)

    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build(name: str, setup: Setup | None = None, **values: Any) -> Any:
    """The task object of a registered task from option values (the rest keep their defaults)."""
    td = get(name)
    return td.build(options_from(td.options, values), setup or Setup())


# -- coercions shared by the tasks' builders: a Python value or a file path --------------------------------------

def as_product(item: Any, index: int = 0) -> Product:
    if isinstance(item, Product):
        return item
    if isinstance(item, str):
        return Product(id=str(index), title=item)
    if isinstance(item, dict):
        return Product.model_validate({"id": str(index), **item})
    raise TypeError(f"expected a Product, dict or title string, got {type(item).__name__}")


def as_schema(attributes: Any) -> AttributeSchema | None:
    """An AttributeSchema from a path, a ``{category: [names]}`` dict, a schema, or None."""
    if isinstance(attributes, (str, Path)):
        return load_attribute_schema(attributes)
    if isinstance(attributes, dict):
        return AttributeSchema.from_mapping(attributes)
    return attributes


def as_pool(examples: Any) -> ExamplePool | None:
    """An ExamplePool from a JSONL path, a pool, or None."""
    return ExamplePool.from_jsonl(examples) if isinstance(examples, (str, Path)) else examples


def trained_schema(setup: Setup) -> AttributeSchema | None:
    """The attribute list a schema-guided adapter was trained on (its ``attributes.json``), or None."""
    from engine.adapters import trained_attributes

    path = trained_attributes(setup.adapter)
    return load_attribute_schema(path) if path else None
