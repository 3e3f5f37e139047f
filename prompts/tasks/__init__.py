"""The tasks, listed explicitly: each module defines one :class:`prompts.tasks.base.TaskDef` (``TASK``), and
``REGISTRY`` maps names to them in this order (the CLI lists them so). A user's own task joins with
``prompts.tasks.base.register``."""

from prompts.tasks import classify, complete, extract, normalize, rank
from prompts.tasks.base import REGISTRY, Rendered, Setup, TaskDef, build, get, option, register
from prompts.tasks.classify import Classify
from prompts.tasks.complete import Complete
from prompts.tasks.extract import Extract
from prompts.tasks.normalize import Normalize
from prompts.tasks.rank import Rank

REGISTRY.update({t.name: t for t in (extract.TASK, classify.TASK, normalize.TASK, complete.TASK, rank.TASK)})

__all__ = ["REGISTRY", "Classify", "Complete", "Extract", "Normalize", "Rank", "Rendered", "Setup", "TaskDef",
           "build", "get", "option", "register"]
