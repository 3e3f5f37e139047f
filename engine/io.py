"""JSONL in and out: bad lines become error records, output is streamed and resumable."""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from engine.errors import InputError
from schemas import Product


@dataclass(frozen=True)
class Line:
    number: int
    product: Product | None
    error: InputError | None
    raw: Any = None


def describe_validation(exc: Exception) -> str:
    """A pydantic ValidationError as 'field: problem; ...' (any other exception: its message)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "record"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "missing" + ("; every product needs a title (also read from name, input, input_title)"
                               if loc == "title" else "")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_line(raw: bytes, number: int, default_id: str | None = None) -> Line:
    """One input line (bytes) as a :class:`Line`: a validated Product, or the reason it is not one. A record
    without an id gets ``default_id`` (default: its line number)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Line(number, None, InputError(f"invalid UTF-8 at byte {exc.start}; re-save the file as UTF-8",
                                             line=number))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Line(number, None, InputError(
            f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object", line=number),
            raw=text.strip()[:200])
    if not isinstance(data, dict):
        return Line(number, None, InputError(f"expected a JSON object, got {type(data).__name__}", line=number),
                    raw=data)
    data.setdefault("id", default_id or str(number))
    rid = str(data.get("id"))
    try:
        return Line(number, Product.model_validate(data), None, raw=data)
    except ValidationError as exc:
        return Line(number, None, InputError(describe_validation(exc), line=number, record_id=rid), raw=data)


def read_jsonl(path: str | Path, strict: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, JSON object) per non-blank line of a JSON Lines file: the one reader of facet's data and
    demonstration files (products read by a task go through :func:`read_products`, which makes error records).
    ``strict``: a line that is not a JSON object raises a ValueError naming the file and line; otherwise it is
    yielded as that ValueError, for the caller to report and go on. A ``.gz`` file is read through gzip."""
    path = Path(path)
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            except ValueError as exc:  # json.JSONDecodeError is one
                err = ValueError(f"{path}: line {n}: not a JSON object ({getattr(exc, 'msg', exc)}); one JSON object "
                                 "per line")
                if strict:
                    raise err from None
                yield n, err
                continue
            yield n, rec


def read_products(source: str | Path | IO[bytes]) -> Iterator[Line]:
    """Yield one :class:`Line` per non-blank input line, valid or not. ``-`` reads stdin."""
    if source == "-" or source is None:
        fh: IO[bytes] = sys.stdin.buffer
        close = False
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        fh = path.open("rb")
        close = True
    else:
        fh, close = source, False
    seen: dict[str, int] = {}
    try:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            line = parse_line(raw, number)
            product = line.product
            if product is not None and product.id in seen:
                line = Line(number, None, InputError(
                    f"duplicate id {product.id!r} (first seen on line {seen[product.id]}); ids must be unique",
                    line=number, record_id=product.id), raw=line.raw)
            elif product is not None:
                seen[product.id] = number
            yield line
    finally:
        if close:
            fh.close()


def done_ids(path: Path) -> set[str]:
    """Ids already written to ``path`` (bad input lines as ``line:N``); a half-written last line
    (killed run) is cut off."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    ids = set()
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("ok") is False and rec.get("line") is not None:
            ids.add(f"line:{rec['line']}")  # a bad input line: its id may be a duplicate's
        elif rec.get("id") is not None:
            ids.add(str(rec["id"]))
    return ids


class JsonlWriter:
    """Appends one JSON object per line and flushes, so a killed run loses at most one line."""

    def __init__(self, target: str | Path | None, append: bool = False):
        if target in (None, "-"):
            self.fh = sys.stdout
            self.close_fh = False
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = path.open("a" if append else "w", encoding="utf-8")
            self.close_fh = True

    def write(self, record: BaseModel | dict) -> None:
        if isinstance(record, BaseModel):
            line = record.model_dump_json(exclude_none=False)
        else:
            line = json.dumps(record, ensure_ascii=False)
        self.fh.write(line + "\n")
        self.fh.flush()
        if self.close_fh:
            os.fsync(self.fh.fileno()) if os.environ.get("FACET_FSYNC") else None

    def close(self) -> None:
        if self.close_fh:
            self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
