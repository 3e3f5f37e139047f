"""`facet serve`: start vLLM's OpenAI-compatible server for the model and the project's adapters.

The server gets the settings facet's clients rely on: xgrammar structured outputs with compact JSON
(``disable_any_whitespace``), LoRA adapters served under their task names (a client picks one with
``model="extract"``), prefix caching (usage reports the cached prompt tokens), and on CPU the settings
measured fastest here (fp32, 32-token KV blocks so that short prompts share their prefixes, all cores to
the model). The served base model is named like facet's ``--model`` (``smollm2-135m`` by default),
so ``facet ... --backend openai`` needs no extra flags.

vLLM's CPU build has a broken ``vllm`` console script (it looks up a distribution named ``vllm``), so
the server is started as ``python -m vllm.entrypoints.openai.api_server``, which works for both builds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from engine.errors import EngineError


def serve_command(model: str, adapters: dict[str, str], *, host: str = "127.0.0.1", port: int = 8000,
                  grammar: str = "xgrammar", max_model_len: int = 4096, extra: list[str] | None = None,
                  cpu: bool | None = None, merge: bool = False, dry_run: bool = False,
                  env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The server's argv and environment (pure apart from resolving the model folder).

    ``merge``: serve the one adapter merged into the weights, under the adapter's name only (on vLLM's CPU
    build ~1.2-1.3x the products/s of LoRA). ``env``: extra environment for the server."""
    from engine.adapters import check_adapter
    from engine.backends.vllm import CPU_BLOCK_SIZE, GRAMMAR_BACKENDS, cpu_env, lora_rank, on_cpu
    from engine.models import resolve_model

    folder = resolve_model(model)
    served = model
    if merge:
        from engine.backends.vllm import merged_model

        if len(adapters) != 1:
            raise EngineError("--merge-adapter serves exactly one adapter")
        (served, path), = adapters.items()
        folder, adapters = merged_model(folder, path, build=not dry_run), {}
    if cpu is None:
        cpu = on_cpu()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
            "--served-model-name", served, "--host", host, "--port", str(port),
            "--max-model-len", str(max_model_len), "--enable-prefix-caching", "--enable-prompt-tokens-details",
            "--structured-outputs-config",
            json.dumps({"backend": GRAMMAR_BACKENDS[grammar], "disable_any_whitespace": True})]
    if adapters:
        for path in adapters.values():
            check_adapter(path)
        argv += ["--enable-lora", "--max-loras", str(len(adapters)), "--max-lora-rank", str(lora_rank(adapters)),
                 "--lora-modules", *[f"{name}={Path(path).resolve()}" for name, path in sorted(adapters.items())]]
    env = {**os.environ, **(env or {})}
    if cpu:
        argv += ["--dtype", "float32", "--block-size", str(CPU_BLOCK_SIZE)]
        env = {**cpu_env(), **env}  # anything already set in the environment wins
    return argv + list(extra or []), env


def wait_ready(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 600.0) -> None:
    """Poll ``GET /v1/models`` until the server answers; fail early if the process exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EngineError(f"the vLLM server exited with code {proc.returncode} before it was ready; "
                              f"its log says why (run `facet serve` in a terminal to see it)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url.rstrip('/')}/models", timeout=5).status_code == 200:
                return
        time.sleep(2)
    raise EngineError(f"the vLLM server at {base_url} was not ready after {timeout:.0f} s")


@contextlib.contextmanager
def running_server(model: str, adapters: dict[str, str], *, port: int, log_file: str | Path | None = None,
                   **options) -> Iterator[str]:
    """Start the server, wait until it answers, yield its ``/v1`` URL, stop it afterwards."""
    argv, env = serve_command(model, adapters, port=port, **options)
    log = open(log_file, "w") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        stop(proc)
        if log_file:
            log.close()


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    import signal

    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
