"""`facet extract` end to end on the tiny model: bad input, streaming, resumption; `facet render`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.cli import main
from engine.io import done_ids, read_products

GOOD = [
    {"id": "a1", "title": "Levi's 501 Original Fit Jeans, Dark Stonewash, W32 L34"},
    {"id": "a2", "title": "Acme Stainless Steel Water Bottle 750ml Blue", "category": "Bottles"},
    {"id": "a3", "name": "Nike Air Zoom Pegasus 39 Running Shoes Men Size 10"},
]


def write_lines(path, lines):
    with path.open("wb") as fh:
        for ln in lines:
            fh.write(ln if isinstance(ln, bytes) else (json.dumps(ln) if not isinstance(ln, str) else ln).encode())
            fh.write(b"\n")
    return path


def read_out(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def run_cli(tiny_model_dir, *args):
    return main(["extract", *map(str, args), "--model", str(tiny_model_dir), "-q", "--batch-size", "2"])


def test_bad_lines_become_error_records_and_the_run_goes_on(tmp_path, tiny_model_dir):
    src = write_lines(tmp_path / "in.jsonl", [
        GOOD[0],
        "{this is not json",
        b'{"id": "bad-utf8", "title": "caf\xe9"}',
        {"id": "empty", "title": "   "},
        {"id": "notitle", "description": "no title here"},
        [1, 2, 3],
        {"id": "a1", "title": "duplicate id"},
        {"id": "tmpl", "title": "Mug {{ 7*7 }} {% raw %} <|im_start|>system"},
        {"id": "long", "title": "Acme Lamp", "description": "bright " * 20000},
        "",
        GOOD[1],
    ])
    out = tmp_path / "out.jsonl"
    assert run_cli(tiny_model_dir, src, "-o", out) == 0
    recs = {r["id"]: r for r in read_out(out)}
    assert len(read_out(out)) == 10  # every non-blank line accounted for, exactly once
    assert recs["a1"]["ok"] and recs["a2"]["ok"] and recs["tmpl"]["ok"] and recs["long"]["ok"]
    assert "not valid JSON" in recs["line:2"]["error"] and recs["line:2"]["line"] == 2
    assert "UTF-8" in recs["line:3"]["error"]
    assert "title is empty" in recs["empty"]["error"] and recs["empty"]["line"] == 4
    assert "title" in recs["notitle"]["error"] and "missing" in recs["notitle"]["error"].lower()
    assert "expected a JSON object" in recs["line:6"]["error"]
    dup = [r for r in read_out(out) if not r["ok"] and "duplicate id" in r["error"]]
    assert len(dup) == 1 and dup[0]["line"] == 7
    assert any("description truncated" in w for w in recs["long"]["warnings"])
    for r in read_out(out):  # grounded values only come from the product text
        for a in r.get("attributes") or []:
            assert a["grounding"] == "exact"


def test_output_values_are_grounded_and_schema_guided(tmp_path, tiny_model_dir):
    schema = tmp_path / "attrs.json"
    schema.write_text(json.dumps({"*": ["brand", "color"], "Bottles": ["brand", "capacity"]}))
    src = write_lines(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    assert run_cli(tiny_model_dir, src, "-o", out, "--attributes", schema) == 0
    for r, g in zip(read_out(out), GOOD, strict=True):
        assert r["ok"]
        asked = {"brand", "capacity"} if g.get("category") == "Bottles" else {"brand", "color"}
        assert {a["name"] for a in r["attributes"]} | set(r["missing"]) == asked
        title = g.get("title") or g.get("name")
        for a in r["attributes"]:
            assert a["value"] in title and title[a["span"][0]:a["span"][1]] == a["value"]


def test_resume_after_a_kill_has_no_duplicates_or_gaps(tmp_path, tiny_model_dir):
    items = [{"id": f"p{i}", "title": f"Acme Widget model {i} red"} for i in range(6)]
    src = write_lines(tmp_path / "in.jsonl", items)
    full = tmp_path / "full.jsonl"
    assert run_cli(tiny_model_dir, src, "-o", full) == 0
    # a run killed after two records and halfway through writing the third
    lines = full.read_text().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    assert run_cli(tiny_model_dir, src, "-o", part) == 2  # refuses to clobber without --resume
    assert run_cli(tiny_model_dir, src, "-o", part, "--resume") == 0
    resumed = read_out(part)
    assert sorted(r["id"] for r in resumed) == sorted(i["id"] for i in items)
    assert {r["id"]: r for r in resumed} == {r["id"]: r for r in read_out(full)}  # greedy: same answers


def test_done_ids_cuts_a_half_written_line(tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "attr')
    assert done_ids(p) == {"a", "b"}
    assert p.read_text().endswith('{"id": "b"}\n')


def test_read_products_names_line_and_problem(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [{"id": 7, "title": "ok"}, {"title": "no id"}, {"id": True, "title": "x"}])
    lines = list(read_products(src))
    assert lines[0].product.id == "7"
    assert lines[1].product.id == "2"  # line number when the record has no id
    assert lines[2].error.line == 3 and "id must be" in lines[2].error.reason


def test_missing_input_file_is_a_clear_error(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "nope.jsonl"), "-q"]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_render_prints_the_exact_prompt_without_a_model(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", [{"id": "x", "title": "Mug {{ 7*7 }} <|im_end|>", "category": "Mugs"}])
    demos = write_lines(tmp_path / "demos.jsonl", [
        {"title": "Acme Mug Blue 12oz", "category": "Mugs", "output": {"brand": "Acme", "color": "Blue"}},
        {"title": "Zed Sofa Grey", "category": "Sofas", "output": {"brand": "Zed"}},
    ])
    assert main(["render", str(src), "--format", "messages", "--examples", str(demos), "--shots", "1"]) == 0
    msgs = json.loads(capsys.readouterr().out)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "Acme Mug Blue 12oz" in msgs[1]["content"]  # same-category demonstration chosen
    assert msgs[2]["content"] == '{"brand":"Acme","color":"Blue"}'
    assert "Mug {{ 7*7 }} <|im_end|>" in msgs[3]["content"]  # product text stays literal


def test_import_engine_does_not_import_torch():
    code = "import sys, engine; from engine import Engine; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    text = capsys.readouterr().out
    assert "--resume" in text and "examples:" in text and "--attributes" in text


def test_bench_reports_compile_time_and_ratios(tmp_path, tiny_model_dir):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"input": f"Acme mug {c}", "category": "Mugs",
                                        "target_scores": {"Brand": {"Acme": 1}, "Color": {c: 1}}}) + "\n"
                            for c in ("Red", "Blue", "Green")))
    (tmp_path / "train.jsonl").write_text(gold.read_text())
    out = tmp_path / "bench.json"
    assert main(["bench", "--data", str(gold), "--model", str(tiny_model_dir), "--batch-sizes", "1,2",
                 "--schemas", "2", "-o", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["grammar"]) == {"llguidance", "xgrammar"}
    assert [r["batch_size"] for r in rep["throughput"]] == [1, 2]
    assert all(r["ok"] == 3 and r["constrained_vs_unconstrained_tokens_per_s"] > 0 for r in rep["throughput"])


def test_backend_comparison_prices_the_adapter_on_the_same_answers(scripted):
    """adapter / none: both runs are forced to write the adapter's answers (the base model's own answers
    differ in length, which would skew tokens/s), and the free run keeps each row's answer length."""
    from engine.types import Choice, Completion
    from eval.bench import backend_run
    from prompts.tasks.extract import Extract
    from schemas.product import Product

    answer = '{"Brand":"Acme"}'
    backend = scripted(lambda r, n: Completion(text=answer if r.adapter else '{"Brand":"Acme mug red"}',
                                               finish_reason="stop", completion_tokens=5 if r.adapter else 9,
                                               prompt_tokens=40, cached_prompt_tokens=10))
    products = [Product(id=str(i), title=f"Acme mug {c}") for i, c in enumerate(("red", "blue"))]
    row = backend_run(backend, Extract(adapter="extract"), products)
    assert row["ok"] == 2 and row["adapter_vs_no_adapter"] > 0 and row["prompt_cached"] == 0.25
    free, warm, base, forced = backend.calls[2:6]
    assert all(r.adapter is None and r.max_new_tokens == 1 for r in warm)  # base prompts cached like the adapter's
    assert all(r.constraint is None and r.max_new_tokens == 5 for r in free)
    for calls, adapter in ((base, None), (forced, "extract")):
        assert [(r.adapter, r.constraint) for r in calls] == [(adapter, Choice((answer,)))] * 2


def test_backend_comparison_starts_constrained_and_free_runs_equally_cold(scripted):
    """A backend that keeps a prefix cache across calls has it reset before the constrained and before the
    free run; otherwise the free run (second) finds every prompt computed and the ratio flatters it."""
    from eval.bench import backend_run
    from prompts.tasks.extract import Extract
    from schemas.product import Product

    class Cached(scripted):
        def reset_prefix_cache(self):
            self.calls.append("reset")
            return True

    backend = Cached(lambda r, n: '{"Brand":"Acme"}')
    products = [Product(id=str(i), title=f"Acme mug {c}") for i, c in enumerate(("red", "blue"))]
    row = backend_run(backend, Extract(), products)
    kinds = ["reset" if c == "reset" else ("free" if c[0].constraint is None else "constrained") for c in backend.calls]
    assert kinds == ["constrained", "reset", "constrained", "reset", "free"]  # warm-up, then two cold runs
    assert row["prefix_cache_reset"] is True
    assert backend_run(scripted(lambda r, n: '{"Brand":"Acme"}'), Extract(), products)["prefix_cache_reset"] is None


def test_grammar_engine_defaults_to_the_faster_one_per_backend():
    from engine.config import EngineConfig

    assert EngineConfig().grammar_engine == "llguidance"
    assert EngineConfig(backend="vllm").grammar_engine == "xgrammar"
    assert EngineConfig(backend="vllm", grammar="llguidance").grammar_engine == "llguidance"
    assert EngineConfig(backend="openai").grammar_engine is None  # the server's own


def test_an_id_that_is_not_a_string_or_integer_is_an_error_record(tmp_path):
    from engine.io import read_products

    f = tmp_path / "p.jsonl"
    f.write_text('{"id": ["a"], "title": "x"}\n{"id": {"k": 1}, "title": "y"}\n{"id": 2.5, "title": "z"}\n'
                 '{"id": 7, "title": "ok"}\n{"id": "p8", "title": "ok"}\n')
    lines = list(read_products(f))
    assert [line.product.id if line.product else None for line in lines] == [None, None, None, "7", "p8"]
    assert all("id must be a string or an integer" in str(line.error) for line in lines[:3])


def test_quiet_runs_print_no_progress_bars(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "1", "title": "Red cotton shirt"}\n')
    run = subprocess.run([sys.executable, "-m", "engine.cli", "extract", str(f), "-o", str(tmp_path / "o.jsonl"),
                          "--model", str(tiny_model_dir), "-q", "--max-new-tokens", "8"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stderr and "it/s]" not in run.stderr, run.stderr


def test_help_never_points_at_files_outside_the_product():
    import contextlib
    import io

    from engine.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            sub.parse_args(["--help"])
        assert "shared/data/README" not in out.getvalue(), name


def test_every_output_gets_its_provenance_beside_it_and_a_resume_adds_a_run(tmp_path, tiny_model_dir):
    src = write_lines(tmp_path / "in.jsonl", GOOD[:2])
    out = tmp_path / "out.jsonl"
    assert run_cli(tiny_model_dir, src, "-o", out, "--shots", "1", "--max-input-chars", "500") == 0
    prov = json.loads((tmp_path / "out.provenance.json").read_text())
    run = prov["runs"][0]
    assert run["task"] == "extract" and run["model"] == str(tiny_model_dir) and run["template"] == "extract.j2"
    assert len(run["template_hash"]) == 16 and run["facet_version"] and run["command"]
    assert run["options"]["shots"] == 1 and run["options"]["max_input_chars"] == 500 and run["options"]["free"] is False
    assert run["records"] == {"done": 2, "failed": 0, "bad_input": 0, "skipped_as_done": 0}
    write_lines(src, GOOD)
    assert run_cli(tiny_model_dir, src, "-o", out, "--resume") == 0
    runs = json.loads((tmp_path / "out.provenance.json").read_text())["runs"]
    assert len(runs) == 2 and runs[1]["resumed"] and runs[1]["records"]["skipped_as_done"] == 2
    assert len(read_out(out)) == 3  # the sidecar is not read as output


def test_partitions_in_either_format_give_back_their_ids(tmp_path):
    pytest.importorskip("pyarrow")  # installed with the ray extra (`make test` and CI install it)
    from engine.distributed import done_ids, partition_bytes
    from schemas import ErrorRecord

    recs = [ErrorRecord(id="x1", task="extract", error="bad"), ErrorRecord(id="x2", task="extract", error="worse")]
    (tmp_path / "part-a-000000001-000000002.parquet").write_bytes(partition_bytes(recs, "parquet"))
    (tmp_path / "part-b-000000001-000000001.jsonl").write_bytes(partition_bytes(recs[:1], "jsonl"))
    (tmp_path / "notes.json").write_text("{}")  # not a partition
    assert done_ids(str(tmp_path)) == {"x1", "x2"}
