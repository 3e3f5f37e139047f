"""Provenance: what produced a file (hashes of inputs, hardware, command), used by eval, training and the CLI."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path
from typing import Any


def file_hash(path: str | Path) -> str:
    """sha256 (16 hex) of a file, or of a folder's files (names and contents, in name order)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
        return h.hexdigest()[:16]
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def hardware() -> str:
    """What ran it: the GPU's name when torch sees one, else the CPU and its core count."""
    import os

    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def provenance(**extra: Any) -> dict:
    return {
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "hardware": hardware(),
        **extra,
    }

