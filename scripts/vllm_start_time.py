"""Time one vLLM engine start plus one tiny request on the default model (docs/benchmarks.md, "vLLM engine start").

    python scripts/vllm_start_time.py                               # with facet's compile-cache plugin
    FACET_VLLM_COMPILE_CACHE=0 python scripts/vllm_start_time.py    # vLLM as it is
"""

import os
import time

if __name__ == "__main__":  # vLLM's engine core is a spawned process
    from engine.backends.vllm import VLLMBackend
    from engine.models import resolve_model
    from engine.types import Request

    t = time.perf_counter()
    backend = VLLMBackend(resolve_model("smollm2-135m"))
    out = backend.generate([Request([{"role": "user", "content": "Say hi"}], None, max_new_tokens=4)])
    print(f"start + first answer {time.perf_counter() - t:.1f}s (FACET_VLLM_COMPILE_CACHE="
          f"{os.environ.get('FACET_VLLM_COMPILE_CACHE', '1')}): {out[0].text!r}")
    backend.close()
