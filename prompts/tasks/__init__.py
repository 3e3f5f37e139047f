"""The tasks. Each module registers one :class:`prompts.tasks.base.TaskDef` on import; importing this package
registers the built-in ones into ``REGISTRY``, in this order (the CLI lists them so)."""

from importlib import import_module

from prompts.tasks.base import REGISTRY, Rendered, Setup, TaskDef, build, get, option, register

BUILT_IN = ("extract", "classify", "normalize", "complete", "rank")
for _name in BUILT_IN:
    import_module(f"prompts.tasks.{_name}")

from prompts.tasks.classify import Classify  # noqa: E402
from prompts.tasks.complete import Complete  # noqa: E402
from prompts.tasks.extract import Extract  # noqa: E402
from prompts.tasks.normalize import Normalize  # noqa: E402
from prompts.tasks.rank import Rank  # noqa: E402

__all__ = ["BUILT_IN", "REGISTRY", "Classify", "Complete", "Extract", "Normalize", "Rank", "Rendered", "Setup",
           "TaskDef", "build", "get", "option", "register"]
