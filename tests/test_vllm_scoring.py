"""How the vLLM backend scores choices, on a fake engine (fast; needs the vllm package, not a model).

vLLM computes prompt log-probs only by re-reading the whole prompt, so scoring asks for none: each continuation
token is one decoding step, allowed alone, its raw log-prob read back, and the question's prompt is computed once.
"""

from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import pytest

# needs the vllm package (not a model): under the vllm marker, and a failure rather than a skip where vLLM is
# required (make test / CI set FACET_REQUIRE_VLLM=1)
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None and os.environ.get("FACET_REQUIRE_VLLM") != "1",
    reason="vLLM is not installed (make setup-vllm)")]


class FakeLLM:
    """Records every generate call; its 'model' gives token t the log-prob -t / 100 after any prompt."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, lora_request=None, use_tqdm=False):
        self.calls.append([(tuple(p["prompt_token_ids"]), sp) for p, sp in zip(prompts, params, strict=True)])
        return [SimpleNamespace(outputs=[SimpleNamespace(logprobs=[{t: SimpleNamespace(logprob=-t / 100)}])])
                for t in (sp.allowed_token_ids[0] for sp in params)]


@pytest.fixture()
def backend(tiny_tokenizer):
    from engine.backends.vllm import VLLMBackend

    b = object.__new__(VLLMBackend)  # everything but the engine itself
    b.llm, b.tokenizer, b.merged, b._lora = FakeLLM(), tiny_tokenizer, None, {}
    b.can_score, b.score_mixes = True, True
    return b


def test_scores_sum_each_continuation_tokens_log_probs_read_from_cached_prompts(backend, tiny_tokenizer):
    from engine.types import ScoreRequest

    q1, q2 = [{"role": "user", "content": "Colour of: navy tee"}], [{"role": "user", "content": "Colour: red cap"}]
    reqs = [ScoreRequest(q1, "Blue"), ScoreRequest(q1, "Blue Green"), ScoreRequest(q2, "Blue")]
    scores = backend.score(reqs)

    def expected(cont):
        ids = tiny_tokenizer(cont, add_special_tokens=False).input_ids + [tiny_tokenizer.eos_token_id]
        return sum(-t / 100 for t in ids)

    assert scores == pytest.approx([expected("Blue"), expected("Blue Green"), expected("Blue")])
    asked = [a for call in backend.llm.calls for a in call]
    assert all(sp.prompt_logprobs is None and sp.max_tokens == 1 and sp.logprobs == 0 for _, sp in asked)
    steps = [(p, sp.allowed_token_ids[0]) for p, sp in asked]
    assert len(steps) == len(set(steps))  # "Blue" and "Blue Green" share their first steps: asked once
    # the first call holds one step per question, so that the rest find its prompt in the cache
    prompts = {tuple(tiny_tokenizer(backend.prompt_text(r), add_special_tokens=False).input_ids) for r in reqs}
    assert len(prompts) == 2 and {p for p, _ in backend.llm.calls[0]} == prompts
