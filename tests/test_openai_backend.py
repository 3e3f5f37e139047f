"""The openai backend against a fake OpenAI-compatible server on 127.0.0.1: request shape, retries,
invalid answers, a dead server, and a batch job that resumes after the server dies mid-run."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.backends.openai import OpenAIBackend, valid
from engine.cli import main
from engine.errors import EngineError
from engine.runner import run_task
from engine.types import Choice, JsonSchema, Regex, Request
from prompts.tasks.extract import Extract
from schemas import AttributeSchema, Product


class FakeServer:
    """``answer(body, n)`` -> (status, json or text); n counts requests from 1."""

    def __init__(self, answer):
        self.answer, self.bodies = answer, []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.bodies.append(body)
                    n = len(outer.bodies)
                status, payload = outer.answer(body, n)
                data = (json.dumps(payload) if not isinstance(payload, str) else payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat(text, finish="stop"):
    return {"choices": [{"message": {"content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


def brand_of(body):
    title = body["messages"][-1]["content"].split("Title: ")[1].split("\n")[0]
    return json.dumps({"Brand": title.split()[0], "Color": None})


SCHEMA = AttributeSchema.from_mapping({"*": ["Brand", "Color"]})


@pytest.fixture()
def server(request):
    servers = []

    def start(answer):
        s = FakeServer(answer)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_requests_carry_the_schema_as_response_format_and_pick_the_adapter_by_name(server):
    srv = server(lambda body, n: (200, chat(brand_of(body))))
    backend = OpenAIBackend(srv.url, "base-model", adapters={"extract": "x"}, concurrency=4)
    task = Extract(attribute_schema=SCHEMA, adapter="extract")
    products = [Product(id=str(i), title=f"Acme{i} mug") for i in range(6)]
    results = run_task(backend, task, products)
    assert [r.as_dict() for r in results] == [{"Brand": f"Acme{i}"} for i in range(6)]
    body = next(b for b in srv.bodies if "Acme0 mug" in b["messages"][-1]["content"])  # requests run concurrently
    assert len(srv.bodies) == 6
    assert body["model"] == "extract" and "guided_json" not in body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == task.schema(products[0])


def test_schema_as_grammar_sends_span_schemas_as_the_compact_grammar_and_still_checks_them(server):
    from engine.backends.grammar import shared_enum_ebnf

    srv = server(lambda body, n: (200, chat(brand_of(body) if n == 1 else '{"Brand":"Acme","Color":"teal"}')))
    backend = OpenAIBackend(srv.url, "m", schema_as="grammar", concurrency=1)
    task = Extract(attribute_schema=SCHEMA)
    product = Product(id="1", title="Acme mug red")
    span, other = task.build(product), Request("q", JsonSchema({"type": "object"}))
    backend.generate([span, other])
    assert srv.bodies[0]["structured_outputs"] == {"grammar": shared_enum_ebnf(span.constraint.schema)}
    assert "response_format" not in srv.bodies[0]
    assert srv.bodies[1]["response_format"]["json_schema"]["schema"] == {"type": "object"}  # not a span schema
    backend.generate([span])  # "teal" is no span of the title: the JSON schema still catches it
    assert backend.invalid == 1
    with pytest.raises(EngineError, match="schema_as must be one of"):
        OpenAIBackend(srv.url, "m", schema_as="ebnf")


def test_choice_and_regex_go_as_structured_outputs(server):
    srv = server(lambda body, n: (200, chat("b")))
    backend = OpenAIBackend(srv.url, "m")
    comps = backend.generate([Request("q", Choice(("a", "b"))), Request("q", Regex("[ab]"))])
    assert [(c.prompt_tokens, c.cached_prompt_tokens) for c in comps] == [(10, 0)] * 2  # usage without details
    sent = sorted((b["structured_outputs"] for b in srv.bodies), key=json.dumps)  # sent concurrently
    assert sent == [{"choice": ["a", "b"]}, {"regex": "[ab]"}]


def test_usage_reports_prompt_tokens_served_from_the_servers_prefix_cache(server):
    usage = {"prompt_tokens": 40, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 32}}
    srv = server(lambda body, n: (200, {**chat("a"), "usage": usage}))
    c, = OpenAIBackend(srv.url, "m").generate([Request("q", Choice(("a",)))])
    assert (c.prompt_tokens, c.cached_prompt_tokens, c.completion_tokens) == (40, 32, 5)


def test_429_and_5xx_are_retried_with_backoff(server):
    srv = server(lambda body, n: (503, "busy") if n <= 2 else (429, "slow down") if n == 3 else (200, chat("a")))
    backend = OpenAIBackend(srv.url, "m", backoff=0.01, concurrency=1)
    assert backend.generate([Request("q", Choice(("a",)))])[0].text == "a"
    assert len(srv.bodies) == 4


def test_a_client_error_is_not_retried_and_names_the_server(server):
    srv = server(lambda body, n: (400, "bad schema"))
    with pytest.raises(EngineError, match="HTTP 400.*bad schema"):
        OpenAIBackend(srv.url, "m", backoff=0.01).generate([Request("q")])
    assert len(srv.bodies) == 1


def test_an_answer_that_breaks_the_schema_becomes_an_error_record(server):
    srv = server(lambda body, n: (200, chat('{"Brand": 1')))  # a server ignoring the constraint
    backend = OpenAIBackend(srv.url, "m", backoff=0.01)
    (res,) = run_task(backend, Extract(attribute_schema=SCHEMA), [Product(id="p", title="Acme mug")])
    assert not res.ok and res.raw == '{"Brand": 1' and backend.invalid == 2  # asked, re-asked once


def test_local_validation():
    schema = JsonSchema({"type": "object", "properties": {"a": {"enum": ["x", None]}}, "required": ["a"]})
    assert valid('{"a":"x"}', schema) and not valid('{"a":"y"}', schema) and not valid("{", schema)
    assert valid("b", Choice(("a", "b"))) and not valid("c", Choice(("a", "b")))


def test_a_dead_server_fails_clearly_after_retries():
    with pytest.raises(EngineError, match="no answer after 2 attempts"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", retries=2, backoff=0.01).generate([Request("q")])


def test_batch_job_resumes_after_the_server_dies_with_no_loss_or_duplicates(server, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "title": f"Brand{i} mug"}) + "\n" for i in range(10)))
    out = tmp_path / "out.jsonl"
    dying = server(lambda body, n: (200, chat(brand_of(body))) if n <= 4 else (503, "gone"))
    args = ["extract", str(src), "-o", str(out), "--backend", "openai", "--model", "m", "-q",
            "--batch-size", "2", "--concurrency", "1", "--attributes", str(tmp_path / "attrs.json")]
    (tmp_path / "attrs.json").write_text(json.dumps({"*": ["Brand", "Color"]}))
    import engine.backends.openai as mod

    orig = mod.OpenAIBackend.__init__
    mod.OpenAIBackend.__init__ = lambda self, *a, **k: orig(self, *a, **{**k, "retries": 2, "backoff": 0.01})
    try:
        assert main([*args, "--base-url", dying.url]) == 2  # the run stops with a clear error...
        first = [json.loads(x)["id"] for x in out.read_text().splitlines()]
        assert first == ["p0", "p1", "p2", "p3"]  # ...keeping what was done
        alive = server(lambda body, n: (200, chat(brand_of(body))))
        assert main([*args, "--base-url", alive.url, "--resume"]) == 0
    finally:
        mod.OpenAIBackend.__init__ = orig
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(f"p{i}" for i in range(10))
    assert all(r["ok"] for r in recs) and len(alive.bodies) == 6


def test_bench_runs_against_a_server(server, tmp_path, capsys):
    """facet bench with the openai backend: no local tokenizer to time grammars with, throughput still measured."""
    data = tmp_path / "gold.jsonl"
    data.write_text("".join(json.dumps({"input": f"Brand{i} mug", "category": "Mug",
                                        "target_scores": {"Brand": {f"Brand{i}": 1}}}) + "\n" for i in range(3)))
    srv = server(lambda body, n: (200, chat(brand_of(body))))
    assert main(["bench", "--data", str(data), "--backend", "openai", "--base-url", srv.url, "--model", "m",
                 "--limit", "3", "--batch-sizes", "2", "-o", str(tmp_path / "bench.json")]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["grammar"] == {} and report["throughput"][0]["batch_size"] == 2
    assert "compiled by the server" in capsys.readouterr().out
