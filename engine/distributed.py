"""Any facet job on a Ray cluster (``facet TASK INPUT -o OUT/ --ray auto --workers N``; ``pip install 'facet[ray]'``).

Ray Data reads the input (a JSONL or Parquet file, a folder, a glob; through pyarrow's filesystems, so object
stores work where the cluster has access), cuts it into batches of lines, and hands each batch to one of
``--workers`` actors. Each actor builds the facet engine once (the same task, prompts, constraints and adapter as
the local command: the command's own ``process`` function is shipped to it) and writes its batch's results as one
partition, ``part-<file>-<first line>-<last line>.jsonl``, with the same records the local CLI writes, error
records included (``--partitions parquet``: ``.parquet`` partitions with columns id, ok, task, error and record,
the whole record as JSON; both are read back by ``--resume``). A partition is written whole or not at all (a temporary file renamed into place; a single PUT
on an object store), so a killed job loses no finished partition, and ``--resume`` skips every id already in the
output's partitions: no gaps, no duplicates.

Bad input never fails the job: a line that is not JSON or not UTF-8 is an error record like any other.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PART_GLOB = "part-*.jsonl"
FORMATS = ("jsonl", "parquet")


def PARQUET_SCHEMA():  # noqa: N802  (a constant, built when pyarrow is first needed)
    """One schema for every partition (a partition with no error still types ``error`` as a string)."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("ok", pa.bool_()), ("task", pa.string()), ("error", pa.string()),
                      ("record", pa.string())])


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    bad_input: int = 0
    skipped: int = 0
    partitions: int = 0
    seconds: float = 0.0

    @property
    def products_per_s(self) -> float:
        n = self.done + self.failed + self.bad_input
        return n / self.seconds if self.seconds else 0.0

    def line(self, output: str) -> str:
        return (f"facet: {self.done} done, {self.failed + self.bad_input} errors ({self.bad_input} bad input), "
                f"{self.skipped} already done, {self.partitions} partitions, {self.seconds:.1f}s, "
                f"{self.products_per_s:.2f} products/s -> {output}")


def _fs(uri: str):
    """(pyarrow filesystem, path inside it) for a local path or an object-store URI."""
    from pyarrow import fs

    if "://" in uri:
        return fs.FileSystem.from_uri(uri)
    return fs.LocalFileSystem(), str(Path(uri).resolve())


def input_files(source: str) -> list[str]:
    """The files of ``source``: a file, a folder (its *.jsonl / *.parquet), or a glob."""
    import glob

    if "://" in source:
        from pyarrow import fs as pafs

        filesystem, path = _fs(source)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            sel = filesystem.get_file_info(pafs.FileSelector(path))
            return sorted(f"{source.split('://')[0]}://{i.path}" for i in sel if i.path.endswith((".jsonl", ".parquet")))
        return [source]
    p = Path(source)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.suffix in (".jsonl", ".json", ".parquet"))
    elif p.is_file():
        files = [str(p)]
    else:
        files = sorted(glob.glob(source))
    if not files:
        raise FileNotFoundError(f"no input files in {source} (a JSONL or Parquet file, a folder of them, or a glob)")
    return files


def read_lines(files: list[str]):
    """A Ray dataset with one row per input line: {"source": file name, "line": number, "raw": bytes}. Parquet
    rows become JSON lines; JSONL is read as bytes, so invalid UTF-8 reaches the workers as an error to report."""
    import ray.data

    jsonl = [f for f in files if not f.endswith(".parquet")]
    parquet = [f for f in files if f.endswith(".parquet")]
    parts = []
    if jsonl:
        def split(row: dict) -> list[dict]:
            name = Path(row["path"]).name
            return [{"source": name, "line": n, "raw": raw}
                    for n, raw in enumerate(row["bytes"].split(b"\n"), 1) if raw.strip()]

        parts.append(ray.data.read_binary_files(jsonl, include_paths=True).flat_map(split))
    if parquet:
        for f in parquet:
            name = Path(f).name
            ds = ray.data.read_parquet(f)
            parts.append(ds.map_batches(
                lambda b, name=name: {"source": [name] * len(b), "line": [0] * len(b),
                                      "raw": [json.dumps(r, default=str).encode() for r in b.to_dict("records")]},
                batch_format="pandas"))
    ds = parts[0]
    for other in parts[1:]:
        ds = ds.union(other)
    return ds


def row_key(source: str, line: int, raw: bytes) -> str:
    """The id a row's record will carry: its own id, else ``<file>:<line>`` (also for unreadable lines)."""
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{source}:{line}"
    if isinstance(rec, dict) and isinstance(rec.get("id"), (str, int)) and not isinstance(rec.get("id"), bool):
        return str(rec["id"])
    return f"{source}:{line}"


def done_ids(output: str) -> set[str]:
    """Ids in the output's finished partitions."""
    from pyarrow import fs as pafs

    filesystem, path = _fs(output)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return set()
    ids = set()
    for info in filesystem.get_file_info(pafs.FileSelector(path)):
        name = info.path.rsplit("/", 1)[-1]
        if name.startswith("part-") and name.endswith(".parquet"):
            import pyarrow.parquet as pq

            ids |= {str(x) for x in pq.read_table(info.path, columns=["id"], filesystem=filesystem)["id"].to_pylist()}
        elif name.startswith("part-") and name.endswith(".jsonl"):
            with filesystem.open_input_stream(info.path) as fh:
                ids |= {str(json.loads(line)["id"]) for line in fh.read().splitlines() if line.strip()}
    return ids


def partition_bytes(records: list, fmt: str) -> bytes:
    """One partition's file: JSON Lines (the records the local CLI writes), or Parquet with one row per record
    (id, ok, task, error, and the whole record as JSON, so that results and error records share one schema)."""
    if fmt == "jsonl":
        return "".join(r.model_dump_json() + "\n" for r in records).encode()
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    dumped = [json.loads(r.model_dump_json()) for r in records]
    table = pa.table({"id": [str(d.get("id")) for d in dumped], "ok": [bool(d.get("ok", True)) for d in dumped],
                      "task": [d.get("task") for d in dumped], "error": [d.get("error") for d in dumped],
                      "record": [json.dumps(d, ensure_ascii=False) for d in dumped]}, schema=PARQUET_SCHEMA())
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class Worker:
    """One actor: the command's ``process`` (which loads the engine once per actor) over batches of lines."""

    def __init__(self, task_name: str, process, to_item, output: str, fmt: str = "jsonl"):
        self.task_name, self.process, self.to_item, self.output, self.fmt = task_name, process, to_item, output, fmt

    def __call__(self, batch: dict) -> dict:
        from engine.errors import InputError
        from engine.io import Line, describe_validation, parse_line
        from engine.runner import RunStats
        from schemas import ErrorRecord

        records: list[tuple[int, Any]] = []
        todo: list[tuple[int, Any]] = []
        sources, lines, raws = list(batch["source"]), [int(x) for x in batch["line"]], list(batch["raw"])
        for k, (source, number, raw) in enumerate(zip(sources, lines, raws, strict=True)):
            ln = parse_line(bytes(raw), number, default_id=f"{source}:{number}")
            if ln.product is not None and self.to_item is not None:
                try:
                    todo.append((k, self.to_item(ln)))
                    continue
                except ValueError as exc:
                    ln = Line(number, None, InputError(describe_validation(exc), line=number,
                                                       record_id=ln.product.id), raw=ln.raw)
            if ln.product is not None:
                todo.append((k, ln.product))
            else:
                records.append((k, ErrorRecord(id=ln.error.record_id or f"{source}:{number}", task=self.task_name,
                                               line=number, error=f"{source}: {ln.error.reason}", input=ln.raw)))
        bad = len(records)
        stats = RunStats()
        if todo:
            results = list(self.process([item for _, item in todo], stats))
            records += [(k, r) for (k, _), r in zip(todo, results, strict=True)]
        records.sort(key=lambda x: x[0])
        name = f"part-{Path(sources[0]).stem}-{lines[0]:09d}-{lines[-1]:09d}.{self.fmt}"
        _write_whole(self.output, name, partition_bytes([r for _, r in records], self.fmt))
        return {"partition": [name], "done": [stats.done], "failed": [stats.failed], "bad_input": [bad]}


def _write_whole(output: str, name: str, body: bytes) -> None:
    """Write one partition so that it exists whole or not at all."""
    filesystem, path = _fs(output)
    filesystem.create_dir(path, recursive=True)
    final = f"{path}/{name}"
    if "://" in output:  # an object store: one PUT is atomic
        with filesystem.open_output_stream(final) as fh:
            fh.write(body)
        return
    tmp = f"{path}/.{name}.{uuid.uuid4().hex}.tmp"
    with filesystem.open_output_stream(tmp) as fh:
        fh.write(body)
    filesystem.move(tmp, final)


def connect(address: str = "auto", workers: int = 2) -> None:
    """Join the Ray cluster at ``address`` ('auto': the one RAY_ADDRESS or `ray start` names, else a new local one)."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError:
        if address != "auto":
            raise
        import os

        # a local cluster: one CPU per worker plus one for reading and writing (else the readers wait for CPUs)
        ray.init(num_cpus=max(os.cpu_count() or 1, workers + 1), include_dashboard=False, log_to_driver=False)


def run(task_name: str, source: str, output: str, process, to_item=None, *, workers: int = 2,
        batch_size: int = 32, resume: bool = False, address: str = "auto", progress: bool = True,
        partitions: str = "jsonl") -> Summary:
    """Run ``process`` (a task command's batch function) over ``source`` on Ray; results into ``output``/."""
    if partitions not in FORMATS:
        raise ValueError(f"partitions are written as one of {FORMATS}, not {partitions!r}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'facet[ray]'") from None
    from pyarrow import fs as pafs

    filesystem, path = _fs(output)
    if filesystem.get_file_info(path).type == pafs.FileType.File:
        raise ValueError(f"with --ray, -o names a folder for the result partitions; {output} is a file")
    files = input_files(source)
    connect(address, workers)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    done = done_ids(output) if resume else set()
    if not resume and filesystem.get_file_info(path).type == pafs.FileType.Directory and any(
            i.path.rsplit("/", 1)[-1].startswith("part-") for i in filesystem.get_file_info(pafs.FileSelector(path))):
        raise ValueError(f"{output} already holds partitions; use --resume to continue the job, or a new folder")
    start = time.perf_counter()
    ds = read_lines(files)
    summary = Summary()
    if done:  # filtered as the rows stream past (counting them first would read the input twice)
        ds = ds.filter(lambda r: row_key(r["source"], r["line"], r["raw"]) not in done)
        summary.skipped = len(done)
        print(f"facet: resuming: {len(done)} records already in {output}", file=sys.stderr)
    # blocks of one batch each, so that every worker gets some (a small file is otherwise one block)
    ds = ds.repartition(target_num_rows_per_block=batch_size)
    out = ds.map_batches(Worker, fn_constructor_args=(task_name, process, to_item, output, partitions), batch_size=batch_size,
                         compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, batch_format="numpy")
    for row in out.iter_rows():
        summary.done += int(row["done"])
        summary.failed += int(row["failed"])
        summary.bad_input += int(row["bad_input"])
        summary.partitions += 1
    summary.seconds = time.perf_counter() - start
    return summary
