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
        if "torch" not in sys.modules:  # not worth a second's import to say so: no GPU work ran in this process
            raise ImportError
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



def facet_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facet")
    except PackageNotFoundError:
        return "unknown"


def jsonable(value: Any) -> Any:
    """A value as JSON can hold it: paths and objects (a schema, a taxonomy) by their text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else f"<{type(value).__name__}>"


def sidecar_path(output: str | Path) -> Path:
    """Where the provenance of an output goes: beside it, ``out.jsonl`` -> ``out.provenance.json``, a folder of
    partitions ``out/`` -> ``out.provenance.json`` (not inside it: readers of the folder, e.g. pyarrow's, take every
    file there for a partition)."""
    output = Path(output)
    if output.is_dir():
        return output.with_name(output.name + ".provenance.json")
    return output.with_suffix(".provenance.json")


def write_sidecar(output: str | Path, run: dict[str, Any]) -> Path:
    """Record one run that wrote ``output`` (model, adapter hash, template hash, options, facet version, counts);
    a resumed output keeps the runs before it, in order."""
    import json
    import time

    path = sidecar_path(output)
    try:
        runs = json.loads(path.read_text()).get("runs", [])
    except (OSError, ValueError):
        runs = []
    adapter = run.get("adapter")
    entry = {"facet_version": facet_version(), **provenance(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             **{k: jsonable(v) for k, v in run.items()},
             "adapter_hash": file_hash(adapter) if adapter and Path(adapter).exists() else None}
    path.write_text(json.dumps({"output": str(output), "runs": [*runs, entry]}, indent=1, ensure_ascii=False))
    return path
