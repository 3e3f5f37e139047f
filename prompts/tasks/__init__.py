"""Tasks: each pairs a template, an output constraint and a parser. Listed explicitly here."""

from prompts.tasks.classify import Classify
from prompts.tasks.complete import Complete
from prompts.tasks.extract import Extract
from prompts.tasks.normalize import Normalize
from prompts.tasks.rank import Rank

TASKS = {"extract": Extract, "classify": Classify, "normalize": Normalize, "complete": Complete, "rank": Rank}

__all__ = ["TASKS", "Classify", "Complete", "Extract", "Normalize", "Rank"]
