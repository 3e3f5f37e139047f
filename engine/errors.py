"""Exception families.

* ``FacetError``: base class.
* ``EngineError``: the engine itself failed (model missing, server down, out of memory).
  Carries ``retryable`` so callers know whether trying again can help.
* ``ParseError``: the model's answer for one item did not satisfy the task's contract.
  The runner turns it into an error record; it never stops a batch.
* ``InputError``: one input record is unusable (bad JSON, empty title, ...).
"""

from __future__ import annotations


class FacetError(Exception):
    """Base class of every error facet raises on purpose."""


class EngineError(FacetError):
    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class ModelNotFoundError(EngineError):
    """The model could not be located or loaded; the message says how to fix it."""


class ParseError(FacetError):
    def __init__(self, task: str, raw: str, reason: str):
        super().__init__(f"{task}: {reason}")
        self.task = task
        self.raw = raw
        self.reason = reason


class InputError(FacetError):
    def __init__(self, reason: str, *, line: int | None = None, record_id: str | None = None):
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{reason}")
        self.reason = reason
        self.line = line
        self.record_id = record_id


def json_object_answer(task: str, completion) -> dict:
    """The completion's text as a JSON object, or the ParseError that says why it is not one."""
    import json

    if completion.finish_reason == "length":
        raise ParseError(task, completion.text, "answer truncated at the token budget")
    try:
        data = json.loads(completion.text)
    except json.JSONDecodeError as exc:
        raise ParseError(task, completion.text, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ParseError(task, completion.text, "answer is not a JSON object")
    return data
