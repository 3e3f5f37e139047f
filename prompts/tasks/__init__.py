"""Tasks: each pairs a template, an output constraint and a parser. Listed explicitly here."""

from prompts.tasks.extract import Extract

TASKS = {"extract": Extract}

__all__ = ["TASKS", "Extract"]
