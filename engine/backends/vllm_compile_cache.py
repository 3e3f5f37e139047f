"""Make vLLM reuse its compile cache (vLLM 0.32, CPU build): a vLLM plugin, like ``vllm_cpu_lora``.

Every engine start here took ~2 minutes because the cached compiled model never loaded: vLLM logs "Compiling
model again due to a load failure from .../torch_compile_cache/... reason: 'function' object has no attribute
'finalize_loading'". ``vllm.compilation.decorators._try_load_aot_compiled_fn`` calls
``loaded_fn._artifacts.compiled_fn.finalize_loading(...)``, which only vLLM's ``VllmSerializableFunction`` has;
the artifact torch returns on this build is a plain function that needs no finalizing (vLLM's own method returns
at once when there is nothing to finalize). Giving such a function a no-op ``finalize_loading`` lets the cached
artifact load. Set ``FACET_VLLM_COMPILE_CACHE=0`` to leave vLLM as it is.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger("facet")


def _finalizable(load):
    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        fn = load(*args, **kwargs)
        inner = getattr(getattr(fn, "_artifacts", None), "compiled_fn", None)
        if inner is not None and not hasattr(inner, "finalize_loading"):
            try:
                inner.finalize_loading = lambda vllm_config: None
            except (AttributeError, TypeError):  # an object that takes no attributes: leave vLLM's fallback
                pass
        return fn

    wrapper._facet_patched = True
    return wrapper


def patch() -> bool:
    import torch

    load = getattr(torch.compiler, "load_compiled_function", None)
    if load is None or getattr(load, "_facet_patched", False):
        return False
    torch.compiler.load_compiled_function = _finalizable(load)
    return True


def register() -> None:
    """``vllm.general_plugins`` entry point: runs in every vLLM process before a model loads."""
    if os.environ.get("FACET_VLLM_COMPILE_CACHE", "1") == "0":
        return
    if patch():
        log.debug("facet: vLLM compile-cache artifacts made loadable")
