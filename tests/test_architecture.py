"""The architecture holds: layers import only downwards, a task is one registered module that every entry point
picks up, and importing facet stays light. See docs/architecture.md."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer and the ones below. The composition roots (the Python API and
# the CLI) sit on top; engine/__init__.py is the package's lazy facade for them.
LAYERS = ("schemas", "engine", "prompts", "eval", "finetune", "entry")
ENTRY = ("engine.api", "engine.cli")
FACADE = ("engine",)


def _layer(module: str) -> str | None:
    if module in FACADE:
        return None
    if any(module == e or module.startswith(e + ".") for e in ENTRY):
        return "entry"
    top = module.split(".")[0]
    return top if top in LAYERS else None


def _modules():
    for top in ("schemas", "engine", "prompts", "eval", "finetune"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
            yield ".".join(parts), path


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # every import, function-level ones too
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_layers_import_only_downwards():
    broken = []
    for module, path in _modules():
        mine = _layer(module)
        if mine is None:
            continue
        for imported in _imports(path):
            theirs = _layer(imported)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                broken.append(f"{module} ({mine}) imports {imported} ({theirs})")
    assert not broken, "layer contract broken:\n" + "\n".join(broken)


def test_the_contract_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from eval.harness import evaluate_extraction\n")
    assert "eval.harness" in _imports(bad) and _layer("eval.harness") == "eval" and _layer("engine.runner") == "engine"


def test_no_cli_module_is_long():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "engine" / "cli").glob("*.py")}
    assert sizes and max(sizes.values()) <= 300, sizes


def test_nothing_outside_a_task_module_switches_on_a_task_name():
    """No `== "extract"` / `in ("classify", ...)` dispatch in the entry points, eval or finetune: they read the
    registry. (Names as data, e.g. the eval table's "task" fields, are fine.)"""
    names = ("extract", "classify", "normalize", "complete", "rank")
    offenders = []
    for top in ("engine/cli", "engine/api.py", "eval/harness.py", "finetune/train.py"):
        for path in ([ROOT / top] if top.endswith(".py") else sorted((ROOT / top).glob("*.py"))):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                    consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                    if any(c in names for c in consts):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


# -- a new task in a few lines: its CLI command, `facet render` and `facet eval` with no other file touched ---------

def test_a_toy_task_registered_in_a_few_lines_gets_its_command_render_and_eval(tmp_path, capsys, scripted,
                                                                                monkeypatch):
    from engine.cli import main
    from engine.runner import run_task
    from engine.types import Choice, Request
    from eval.tasks import EVALS, EvalDef, EvalOptions, register_eval
    from prompts.tasks.base import REGISTRY, Rendered, TaskDef, option, register

    @dataclass(frozen=True)
    class ShoutOptions:
        word: str = option("LOUD", "the answer to allow")

    @dataclass(frozen=True)
    class Shout:
        word: str
        name: str = "shout"
        template: str = "extract.j2"

        def messages(self, product):
            return [{"role": "user", "content": f"Shout {product.title}"}]

        def build(self, product):
            return Request(prompt=tuple(self.messages(product)), constraint=Choice((self.word,)), max_new_tokens=8)

        def parse(self, completion, product):
            return {"id": product.id, "shout": completion.text}

    monkeypatch.setitem(REGISTRY, "shout", None)  # removed again after the test
    register(TaskDef(name="shout", help="shout the title", options=ShoutOptions,
                     build=lambda opts, setup: Shout(opts.word),
                     run=lambda backend, task, items, stats, state=None: run_task(backend, task, items, stats=stats),
                     render=lambda task, p: Rendered(task.messages(p), "# one of:\n" + task.word)))
    monkeypatch.setitem(EVALS, "shout", None)
    register_eval(EvalDef("shout", "shout", "share of shouts", lambda ctx: {
        "summary": {"n": len(ctx.options.data or "")}}, lambda r: "# shout\n", lambda r: f"n {r['summary']['n']}",
        EvalOptions))
    import engine.cli.tasks

    monkeypatch.setattr(engine.cli.tasks, "backend_for", lambda args, task: scripted(lambda req, n: "HEY"))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "title": "hello"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["shout", str(src), "--word", "HEY", "-o", str(out), "-q", "--adapter", "none"]) == 0
    assert json.loads(out.read_text()) == {"id": "a", "shout": "HEY"}
    assert main(["render", str(src), "--task", "shout", "--format", "messages", "--schema", "--word", "HI"]) == 0
    printed = capsys.readouterr().out
    assert "Shout hello" in printed and "# one of:\nHI" in printed
    assert main(["eval", "shout", "--data", "abc", "-o", str(tmp_path / "ev"), "--adapter", "none"]) == 0
    assert "n 3" in capsys.readouterr().out and (tmp_path / "ev" / "report.md").is_file()


# -- import weight ------------------------------------------------------------------------------------------------

def _loads_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in " \
            "('torch', 'transformers', 'vllm'))))"
    out = subprocess.run([sys.executable, "-c", "import json\n" + probe], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    return bool(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("code", [
    "import engine", "import engine.cli", "import prompts.tasks", "import eval.tasks",
    "from engine.cli import main\ntry:\n    main(['serve', '--dry-run'])\nexcept SystemExit:\n    pass",
    "from engine.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_importing_facet_and_light_commands_load_no_model_library(code):
    assert not _loads_torch(code), code
