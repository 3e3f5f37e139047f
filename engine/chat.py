"""Chat messages -> model text. The one function used by inference and training alike."""

from __future__ import annotations

from collections.abc import Sequence

from engine.types import Message


def request_text(tokenizer, request) -> str:
    """A request's prompt as model text: plain strings pass through, chat messages get the chat template."""
    if isinstance(request.prompt, str):
        return request.prompt
    return to_prompt_text(tokenizer, list(request.prompt))


def to_prompt_text(tokenizer, messages: Sequence[Message], answer: str | None = None) -> str:
    """Render ``messages`` with the tokenizer's chat template, ready for the assistant's turn.

    With ``answer``, returns prompt + answer + end-of-turn, exactly the text training sees; the
    prompt part is byte-identical to the inference prompt.
    """
    prompt = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if answer is None:
        return prompt
    return prompt + answer + (tokenizer.eos_token or "")
