"""facet's LoRA ops for vLLM's CPU build: the arithmetic, checked against a per-row reference (pure torch;
the vLLM-marked tests in test_vllm.py check them inside a real engine against PEFT)."""

from __future__ import annotations

import torch

from engine.backends.vllm_cpu_lora import bgmv_expand_slice, bgmv_shrink, lora_matmul, sgmv_shrink, single_adapter


def _reference(x, w, idx):
    w = w.squeeze(1) if w.dim() == 4 else w
    return torch.stack([x[i] @ w[j].T if j >= 0 else torch.zeros(w.shape[1]) for i, j in enumerate(idx.tolist())])


def _data(n=7, adapters=3, r=4, d=10):
    torch.manual_seed(0)
    return torch.randn(n, d), torch.randn(adapters, 1, r, d)


def test_rows_get_their_own_adapter_and_index_minus_one_gets_none():
    x, w = _data()
    idx = torch.tensor([0, 2, -1, 1, 2, -1, 0])
    out = lora_matmul(x, w, idx, torch.float32)
    assert torch.allclose(out, _reference(x, w, idx), atol=1e-5)
    assert (out[idx == -1] == 0).all()  # vLLM's own op gave these rows the last adapter


def test_one_adapter_for_all_rows_is_one_matmul_with_the_same_result():
    x, w = _data()
    idx = torch.full((7,), 1)
    assert torch.allclose(lora_matmul(x, w, idx, torch.float32), x @ w[1, 0].T, atol=1e-5)


def test_shapes_it_does_not_know_are_left_to_vllm():
    x, w = _data()
    assert lora_matmul(x, w, torch.tensor([0, 1, 2]), torch.float32) is None


def test_shrink_scales_and_expand_slice_adds_into_its_slice():
    x, a = _data(r=4)
    idx = torch.tensor([0, 1, -1, 1, 0, 0, 2])
    buf = torch.zeros(7, 4)
    bgmv_shrink(x, a, buf, idx, 0.5)
    assert torch.allclose(buf, 0.5 * _reference(x, a, idx), atol=1e-5)
    b = torch.randn(3, 1, 6, 4)
    y = torch.ones(7, 10)
    bgmv_expand_slice(buf, b, y, idx, 2, 6, True)
    assert torch.allclose(y[:, 2:8], 1 + _reference(buf, b, idx), atol=1e-5)
    assert (y[:, :2] == 1).all() and (y[:, 8:] == 1).all()


def test_prefill_indices_are_per_sequence():
    x, a = _data(n=5)
    buf = torch.zeros(5, 4)
    sgmv_shrink(x, a, buf, None, torch.tensor([2, 3]), torch.tensor([-1, 2]), 2, 3, 5, 1.0)
    assert torch.allclose(buf, _reference(x, a, torch.tensor([-1, -1, 2, 2, 2])), atol=1e-5)


def test_single_adapter_follows_in_place_updates_of_the_index_buffer():
    buffer = torch.zeros(8, dtype=torch.long)
    assert single_adapter(buffer[:4]) == 0
    buffer[:4].copy_(torch.tensor([0, 1, 1, 0]))  # vLLM updates its metadata in place each step
    assert single_adapter(buffer[:4]) is None
    buffer[:4].fill_(-1)
    assert single_adapter(buffer[:4]) == -1
    assert single_adapter(buffer[:6]) is None  # a longer batch over the same buffer: rows 4-5 are 0


class _Wrapper:  # the two index views vLLM's punica wrapper gives its ops
    def __init__(self, tokens, sampler):
        self.token_lora_indices, self.sampler_indices = tokens, sampler


def test_linear_layer_with_one_adapter_adds_each_slice_its_own_product():
    from engine.backends.vllm_cpu_lora import add_lora_linear

    torch.manual_seed(0)
    x = torch.randn(5, 10)
    a = (torch.randn(2, 1, 4, 10), torch.randn(2, 1, 4, 10))
    b = (torch.randn(2, 1, 3, 4), torch.randn(2, 1, 6, 4))
    y = torch.ones(5, 9)
    add_lora_linear(_Wrapper(torch.full((5,), 1), torch.full((2,), 1)), y, x, a, b, 0.5, (3, 6))
    assert torch.allclose(y[:, :3], 1 + (x @ a[0][1, 0].T * 0.5) @ b[0][1, 0].T, atol=1e-4)
    assert torch.allclose(y[:, 3:], 1 + (x @ a[1][1, 0].T * 0.5) @ b[1][1, 0].T, atol=1e-4)
    add_lora_linear(_Wrapper(torch.full((5,), -1), torch.full((2,), -1)), y2 := torch.ones(5, 9), x, a, b, 0.5, (3, 6))
    assert (y2 == 1).all()  # base-model rows: untouched


def test_prompt_logprobs_rows_get_the_batch_adapter():
    """Prompt log-probs hand the logits op one row per prompt token but one index per request; vLLM's op
    fails there. When the step uses one adapter, every row gets it."""
    from engine.backends.vllm_cpu_lora import add_lora_logits

    torch.manual_seed(0)
    x, a, b = torch.randn(7, 10), torch.randn(2, 1, 4, 10), torch.randn(2, 1, 12, 4)
    y = torch.zeros(7, 12)
    add_lora_logits(_Wrapper(torch.full((7,), 0), torch.full((2,), 0)), y, x, a, b, 1.0)
    assert torch.allclose(y, (x @ a[0, 0].T) @ b[0, 0].T, atol=1e-4)


def test_linear_layer_weights_cached_per_adapter_follow_adapter_loads():
    """The stacked A/B of a layer are folded once per adapter slot; loading another adapter into the slot
    (vLLM copies into the buffers in place) must be seen by the next step."""
    from engine.backends.vllm_cpu_lora import add_lora_linear

    torch.manual_seed(0)
    x = torch.randn(5, 10)
    a = (torch.randn(2, 1, 4, 10), torch.randn(2, 1, 4, 10), torch.randn(2, 1, 4, 10))
    b = (torch.randn(2, 1, 3, 4), torch.randn(2, 1, 6, 4), torch.randn(2, 1, 2, 4))

    def expected(slot):
        parts = [(x @ a[k][slot, 0].T * 0.5) @ b[k][slot, 0].T for k in range(3)]
        return 1 + torch.cat(parts, dim=1)

    for slot in (0, 1, 0):
        y = torch.ones(5, 11)
        add_lora_linear(_Wrapper(torch.full((5,), slot), torch.full((2,), slot)), y, x, a, b, 0.5, (3, 6, 2))
        assert torch.allclose(y, expected(slot), atol=1e-4)
    a[1][0, 0].copy_(torch.randn(4, 10))  # another adapter loaded into slot 0
    b[2][0].zero_()
    y = torch.ones(5, 11)
    add_lora_linear(_Wrapper(torch.full((5,), 0), torch.full((2,), 0)), y, x, a, b, 0.5, (3, 6, 2))
    assert torch.allclose(y, expected(0), atol=1e-4)
