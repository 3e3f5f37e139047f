"""OpenAI-compatible backend: any chat-completions server, in particular ``vllm serve``.

Constraints travel as data: JSON schemas as ``response_format`` (``json_schema``; never the old
``guided_json`` key, which vLLM accepts and silently ignores), choices and regexes as vLLM's
``structured_outputs`` extension. Requests run with bounded concurrency, a timeout, and retries with
exponential backoff and jitter on 429, 5xx and connection errors. Every constrained answer is checked
locally (a server may ignore a constraint it does not support): an answer that does not validate is
passed on unchanged but counted in ``invalid``, and the task's parser turns it into an error record.
An adapter is chosen by model name (``vllm serve ... --lora-modules extract=PATH``).

``schema_as="grammar"`` (opt-in, for a vLLM server with xgrammar, as ``facet serve`` starts) sends facet's span
schemas as the compact grammar the in-process vLLM backend uses (``structured_outputs.grammar``, each shared
enum written once) instead of the JSON schema, which xgrammar compiles ~7x slower; other schemas still go as
``response_format``. Answers are validated against the JSON schema either way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from engine.backends.grammar import shared_enum_ebnf
from engine.errors import EngineError
from engine.types import Choice, Completion, JsonSchema, Regex, Request

log = logging.getLogger("facet")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
SCHEMA_AS = ("response_format", "grammar")


class _Retryable(Exception):
    pass


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, retries: int = 6, adapters: dict[str, str] | None = None,
                 backoff: float = 1.0, schema_as: str = "response_format"):
        import httpx

        if schema_as not in SCHEMA_AS:
            raise EngineError(f"schema_as must be one of {SCHEMA_AS}, not {schema_as!r}")
        self.schema_as = schema_as

        self.base_url = base_url.rstrip("/")
        self.model = model
        # facet adapter name -> served model name (by default the same name, as --lora-modules NAME=PATH)
        self.adapters = {name: name for name in adapters or {}}
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.invalid = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "openai"

    def reset_prefix_cache(self) -> bool:
        """Ask a vLLM server to forget its cached prompt prefixes; True when it did. vLLM offers this only
        when started with ``VLLM_SERVER_DEV_MODE=1`` (``facet bench``'s own server is); otherwise False."""
        import httpx

        try:
            resp = self.client.post(f"{self.base_url.removesuffix('/v1')}/reset_prefix_cache")
            return resp.status_code == 200 and bool(resp.json().get("success"))
        except (httpx.HTTPError, ValueError):
            return False

    def body(self, r: Request) -> dict:
        messages = [{"role": "user", "content": r.prompt}] if isinstance(r.prompt, str) else list(r.prompt)
        body = {"model": self.adapters.get(r.adapter, r.adapter) if r.adapter else self.model,
                "messages": messages, "max_tokens": r.max_new_tokens, "temperature": r.temperature}
        c = r.constraint
        ebnf = shared_enum_ebnf(c.schema) if isinstance(c, JsonSchema) and self.schema_as == "grammar" else None
        if ebnf:
            body["structured_outputs"] = {"grammar": ebnf}
        elif isinstance(c, JsonSchema):
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": c.schema, "strict": True}}
        elif isinstance(c, Choice):
            body["structured_outputs"] = {"choice": list(c.options)}
        elif isinstance(c, Regex):
            body["structured_outputs"] = {"regex": c.pattern}
        if r.want_logprobs:
            body["logprobs"] = True
        return body

    def _post(self, body: dict) -> dict:
        import httpx
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        @retry(retry=retry_if_exception_type(_Retryable), stop=stop_after_attempt(self.retries), reraise=True,
               wait=wait_exponential_jitter(initial=self.backoff, max=30 * self.backoff))
        def call() -> dict:
            try:
                resp = self.client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: the server may be restarting
                log.warning("server unreachable (%s); retrying", exc)
                raise _Retryable(str(exc)) from exc
            if resp.status_code in RETRY_STATUS:
                log.warning("server answered %s; retrying", resp.status_code)
                raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}")
            if resp.status_code >= 400:
                raise EngineError(f"{self.base_url} refused the request (HTTP {resp.status_code}): {resp.text[:300]}")
            return resp.json()

        try:
            return call()
        except _Retryable as exc:
            raise EngineError(f"{self.base_url}: no answer after {self.retries} attempts ({exc})",
                              retryable=True) from None

    def _one(self, r: Request) -> Completion:
        data = self._post(self.body(r))
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EngineError(f"{self.base_url}: unexpected response {str(data)[:300]}") from None
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        logprobs = None
        if r.want_logprobs and (choice.get("logprobs") or {}).get("content"):
            logprobs = tuple((t["token"], float(t["logprob"])) for t in choice["logprobs"]["content"])
        if finish == "stop" and r.constraint is not None and not valid(text, r.constraint):
            with self._lock:
                self.invalid += 1
            log.warning("the server's answer does not satisfy the constraint: %r", text[:120])
        usage = data.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0  # vLLM: with the flag on
        return Completion(text=text, finish_reason=finish, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)), logprobs=logprobs,
                          cached_prompt_tokens=int(cached))

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        from engine.adapters import check_known

        check_known(requests, self.adapters, "serve it with --lora-modules NAME=PATH and pass --adapter NAME")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))


def valid(text: str, constraint) -> bool:
    """Does ``text`` satisfy the constraint? (checked locally, whatever the server claims)."""
    if isinstance(constraint, Choice):
        return text in constraint.options
    if isinstance(constraint, Regex):
        return re.fullmatch(constraint.pattern, text) is not None
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), constraint.schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True
