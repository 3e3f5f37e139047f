"""The adapter facet ships: used by default, replaceable, loadable by PEFT and vLLM, with its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import adapters as shipped
from engine.adapters import SHIPPED_ADAPTER, adapter_problems, resolve_adapter, shipped_tasks

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("extract", "complete", "classify", "rank")


@pytest.fixture()
def fake_shipped(tmp_path, monkeypatch):
    """A stand-in for the shipped adapter folder (only its provenance is read by the resolution)."""
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "facet_provenance.json").write_text(json.dumps({"task": "default", "tasks": list(TASKS)}))
    monkeypatch.setattr(shipped, "SHIPPED_ROOT", tmp_path)
    monkeypatch.setattr(shipped, "SHIPPED_ADAPTER", folder)
    return folder


def test_the_shipped_adapter_is_the_default_for_the_tasks_it_was_trained_on(fake_shipped):
    assert shipped_tasks() == TASKS
    for task in TASKS:
        assert resolve_adapter(None, task) == str(fake_shipped)
        assert resolve_adapter("default", task, "smollm2-135m") == str(fake_shipped)
    assert resolve_adapter(None, "normalize") is None  # not trained on it: the base model decides
    assert resolve_adapter("none", "extract") is None
    assert resolve_adapter("NONE", "classify") is None
    assert resolve_adapter("my/adapter", "extract") == "my/adapter"
    assert resolve_adapter(None, "extract", "/some/other/model") is None  # trained for the default base only


def test_completion_runs_with_the_extraction_adapter_unless_one_of_its_own_ships(tmp_path, monkeypatch):
    from engine.api import Engine

    monkeypatch.setattr(shipped, "SHIPPED_ROOT", tmp_path)
    monkeypatch.setattr(shipped, "SHIPPED_ADAPTER", tmp_path / "default")
    for name in ("extract", "classify"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "facet_provenance.json").write_text(json.dumps({"tasks": [name]}))
    assert resolve_adapter(None, "complete") == str(tmp_path / "extract")
    eng = Engine()
    assert eng._adapter_name("complete") == "extract" and eng.task("complete", attributes={"*": ["Brand"]}).reader
    assert resolve_adapter(None, "rank") is None  # SHIPPED_FOR names completion only
    (tmp_path / "complete").mkdir()
    (tmp_path / "complete" / "facet_provenance.json").write_text(json.dumps({"tasks": ["complete"]}))
    assert resolve_adapter(None, "complete") == str(tmp_path / "complete")
    eng = Engine()
    assert eng._adapter_name("complete") == "complete" and not eng.task("complete", attributes={"*": ["Brand"]}).reader


def test_cli_commands_get_the_shipped_adapter_unless_told_otherwise(fake_shipped):
    from engine.cli import _default_adapter, build_parser

    def adapter(*argv):
        args = build_parser().parse_args(list(argv))
        _default_adapter(args)
        return args.adapter

    assert adapter("extract", "x.jsonl") == str(fake_shipped)
    assert adapter("classify", "x.jsonl") == str(fake_shipped)
    assert adapter("complete", "x.jsonl", "--attributes", "a.json") == str(fake_shipped)
    assert adapter("rank", "x.jsonl") == str(fake_shipped)
    assert adapter("eval", "classify", "--data", "d.csv") == str(fake_shipped)
    assert adapter("normalize", "x.jsonl", "--spec", "s.json") is None
    assert adapter("extract", "x.jsonl", "--adapter", "none") is None
    assert adapter("extract", "x.jsonl", "--adapter", "runs/mine") == "runs/mine"
    assert adapter("extract", "x.jsonl", "--model", "/tiny") is None
    # the shipped adapters were trained without demonstrations (and extraction's measured worse than the base model
    # with them out of its domain): with --examples the base model answers, unless the adapter is asked for
    assert adapter("extract", "x.jsonl", "--examples", "demos.jsonl") is None
    assert adapter("eval", "extract", "--data", "d.jsonl", "--examples", "demos.jsonl") is None
    assert adapter("extract", "x.jsonl", "--examples", "demos.jsonl", "--adapter", "default") == str(fake_shipped)
    assert adapter("classify", "x.jsonl", "--examples", "l.jsonl") is None
    assert adapter("complete", "x.jsonl", "--examples", "l.jsonl") is None
    assert adapter("classify", "x.jsonl", "--examples", "l.jsonl", "--adapter", "default") == str(fake_shipped)
    # a server's adapters are names it serves: no default folder is sent to it
    assert adapter("extract", "x.jsonl", "--backend", "openai") is None
    assert adapter("extract", "x.jsonl", "--backend", "openai", "--adapter", "default") == "default"


def test_engine_names_one_shipped_adapter_for_all_its_tasks(fake_shipped):
    from engine.api import Engine

    eng = Engine()
    assert eng.config.adapters == {"default": str(fake_shipped)}  # loaded once, whatever the number of tasks
    assert eng.extract_task.adapter == "default"
    assert eng._adapter_name("classify") == eng._adapter_name("rank") == eng._adapter_name("complete") == "default"
    assert eng._adapter_name("normalize") is None
    assert Engine(adapter=None).config.adapters == {}
    assert Engine(adapter=None).extract_task.adapter is None
    with_demos = Engine(examples=ROOT / "examples/demonstrations.jsonl")
    assert with_demos.extract_task.adapter is None  # demonstrations go to the base model (WITH_DEMONSTRATIONS)
    assert with_demos._adapter_name("classify", demonstrations=True) is None
    own = Engine(adapters={"classify": "runs/cls"})
    assert own._adapter_name("classify") == "classify" and own._adapter_name("extract") == "default"


def test_requests_carry_the_shipped_adapter(fake_shipped, scripted):
    """What reaches the backend: the extract request names the shipped adapter (and None with adapter=None)."""
    from engine.api import Engine

    seen = []

    def answer(req, _n):
        seen.append(req.adapter)
        return '{"Brand":"Levi\'s"}'

    eng = Engine()
    eng._backend = scripted(answer)
    eng.extract({"id": "p1", "title": "Levi's 501 Jeans"})
    base = Engine(adapter=None)
    base._backend = scripted(answer)
    base.extract({"id": "p1", "title": "Levi's 501 Jeans"})
    assert seen == ["default", None]


# -- the shipped files themselves (committed, so these never skip) ------------------------------------------

def _provenance(folder: Path = SHIPPED_ADAPTER) -> dict:
    return json.loads((folder / "facet_provenance.json").read_text())


FOLDERS = shipped.shipped_folders()  # the real ones: committed, so these never skip


def test_the_shipped_set_is_one_adapter_each_for_extraction_classification_ranking():
    from finetune.default import COMPARED, SHIPPED_SET

    assert [p.name for p in FOLDERS] == ["classify", "extract", "rank"] == sorted(set(SHIPPED_SET) - set(COMPARED))
    for task in ("extract", "classify", "rank"):  # each measured better than the multi-task adapter
        assert resolve_adapter(None, task) == str(shipped.SHIPPED_ROOT / task)
    # completion reads with the extraction adapter (it measured better than the completion adapter shipped before)
    assert resolve_adapter(None, "complete") == str(shipped.SHIPPED_ROOT / "extract")
    assert set(_provenance(shipped.SHIPPED_ROOT / "extract")["metrics"]) >= {"extract", "complete"}
    assert not SHIPPED_ADAPTER.exists() and resolve_adapter(None, "normalize") is None
    total = sum(f.stat().st_size for p in FOLDERS for f in p.iterdir())
    assert total < 25 * 2**20, f"the shipped adapters are {total / 2**20:.1f} MiB together"


def test_make_adapters_rebuilds_scores_and_installs_each_shipped_member():
    import re

    from finetune.default import COMPARED, SHIPPED_SET

    rule = (ROOT / "Makefile").read_text().split("\nadapters:")[1].split("\n\n")[0]
    shipped_members = sorted(set(SHIPPED_SET) - set(COMPARED))
    assert sorted(re.findall(r"--which (\w+)", rule)) == shipped_members
    assert sorted(re.findall(r"\$\(call install,[^,]+,[^,]+,(\w+)\)", rule)) == shipped_members


def test_every_shipped_file_is_package_data():
    """A wheel (`pip install .`, not only an editable install) carries every shipped adapter's files."""
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["engine"]
    engine = ROOT / "engine"
    files = [f.relative_to(engine) for p in FOLDERS for f in p.iterdir()]
    assert files and all(any(f.match(g) for g in globs) for f in files), [str(f) for f in files]


@pytest.mark.slow
def test_the_wheel_carries_every_module_template_and_shipped_adapter(tmp_path):
    """`pip install .` (not the editable install) gives a working `facet`: a wheel once lacked engine/cli and
    eval/data (the searches `facet eval query` scores)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    import tomllib

    # built from a copy: setuptools' build/ folder keeps what an earlier build put there, hiding a missing package
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "runs", "build", "out", "adapters", "*.egg-info",
                                                             "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("facet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = [g.rstrip("*") for g in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
            ["packages"]["find"]["include"]]
    suffixes = (".py", ".j2", ".json", ".jsonl", ".safetensors", ".gz")
    wanted = {f.relative_to(ROOT).as_posix() for top in tops for f in (ROOT / top).rglob("*")
              if f.is_file() and f.suffix in suffixes and "__pycache__" not in f.parts}
    assert "engine/cli/__init__.py" in wanted and any(n.startswith("engine/shipped/") for n in wanted)
    assert wanted - names == set()


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_shipped_adapter_is_present_small_half_precision_and_servable(folder):
    from safetensors import safe_open

    weights = folder / "adapter_model.safetensors"
    assert weights.is_file(), "the shipped adapter is missing: rebuild it with `make adapters`"
    with safe_open(str(weights), "pt") as fh:
        dtypes = {str(fh.get_tensor(k).dtype) for k in fh.keys()}
    assert dtypes == {"torch.float16"}
    assert adapter_problems(json.loads((folder / "adapter_config.json").read_text())) == []
    assert not (folder / "attributes.json").exists()  # open extraction by default


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_shipped_adapter_records_where_it_came_from(folder):
    from prompts.render import template_hash

    prov = _provenance(folder)
    assert set(prov["tasks"]) == (set(TASKS) if folder.name == "default" else {folder.name})
    assert prov["command"].startswith("facet train default")
    assert set(prov["train_data_hashes"]) == {"oa-mine/train.jsonl", "oa-mine/train_extra.jsonl",
                                              "pricerunner/dev.csv", "shopify-taxonomy/categories.txt",
                                              "shopify-taxonomy/attributes.json",
                                              "shopify-taxonomy/category_attributes.json"}
    assert not any("validation" in f or "wands" in f or "wdc" in f for f in prov["train_data_hashes"])
    assert prov["git_commit"] and prov["base_model"]
    # the prompts it was trained on are the ones inference renders today
    for task, name in prov["templates"].items():
        assert template_hash(name) == prov["template_hashes"][task], f"{name} changed since the adapter was trained"
    assert set(prov["tasks"]) <= set(prov.get("metrics", {}))  # scored on held-out data for each of its tasks


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_facet_train_default_which_rebuilds_what_ships(folder):
    """The recipe and training settings `facet train default --which NAME` uses are the ones the shipped file
    records: a change to SHIPPED_SET without retraining (or a retrained file without its entry) fails here."""
    from finetune.default import RECIPE_FIELDS, SHIPPED_SET, Recipe, member_recipe, member_training

    prov, member = _provenance(folder), SHIPPED_SET[folder.name]
    recipe, added = member_recipe(folder.name).__dict__, Recipe().__dict__  # a field added since: its default
    fields = ["seed", "val_share", *(f for t in member["tasks"] for f in RECIPE_FIELDS[t])]
    assert {f: prov["recipe"].get(f, added[f]) for f in fields} == {f: recipe[f] for f in fields}
    assert prov["tasks"] == list(member["tasks"])
    training = member_training(folder.name)
    assert {k: prov["config"][k] for k in training} == training


def test_the_shipped_labelled_titles_are_the_ones_the_classification_adapter_records():
    """The titles whose neighbours vote in classification ship beside its adapter, on the label maps' Shopify paths
    (PriceRunner's and OA-Mine's categories only), as its provenance records them."""
    from engine.adapters import SHIPPED_LABELLED
    from engine.provenance import file_hash
    from eval.datasets import OA_MINE_SHOPIFY, PRICERUNNER_SHOPIFY
    from prompts.neighbours import read_labelled

    entry = _provenance(SHIPPED_LABELLED.parent)["labelled_titles"]
    assert entry["file"] == SHIPPED_LABELLED.name and file_hash(SHIPPED_LABELLED) == entry["sha256"]
    rows = read_labelled(SHIPPED_LABELLED)
    assert len(rows) == entry["rows"] == sum(entry["from"].values())
    assert {r.path for r in rows} == {*PRICERUNNER_SHOPIFY.values(), *OA_MINE_SHOPIFY.values()}


def test_every_recipe_field_is_tied_to_the_tasks_whose_pairs_it_changes():
    """RECIPE_FIELDS says which Recipe fields each task's pairs depend on (the rebuild test above compares only
    those): a new Recipe field left out of it would go unchecked, so it fails here until it is placed."""
    from dataclasses import fields

    from finetune.default import RECIPE_FIELDS, Recipe

    placed = {f for names in RECIPE_FIELDS.values() for f in names}
    assert set(RECIPE_FIELDS) == set(Recipe().tasks)
    assert {f.name for f in fields(Recipe)} - {"seed", "val_share", "tasks"} == placed


@pytest.mark.slow
def test_shipped_adapter_loads_in_peft_and_answers_the_readme_example(default_model_dir):
    from engine.api import Engine

    r = Engine(threads=2).extract({"id": "p1", "title": "Levi's 501 Original Fit Jeans, Dark Stonewash, W32 L34"})
    assert r.ok
    assert r.as_dict().get("Brand") == "Levi's"


# -- the recipe that rebuilds it (facet train default) --------------------------------------------------------

DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "oa-mine").exists(), reason=f"{DATA} not present")


@needs_data
def test_the_recipe_trains_on_no_row_that_is_measured():
    from eval.datasets import PRICERUNNER_SHOPIFY, map_class_labels, read_classification_gold, split_by_group
    from finetune.default import Recipe, build

    built = build(DATA, Recipe(classify_titles=60, classify_oa_titles=30, classify_synthetic=30, rank_queries=40,
                               complete_titles=60))
    assert set(built.pairs) == set(TASKS) and all(built.pairs[t] and built.val[t] for t in TASKS)
    prompts = [json.dumps(m) for t in built.pairs for m, _a in built.pairs[t] + built.val[t]]
    validation = [json.loads(line)["input"] for line in (DATA / "oa-mine/validation.jsonl").open()]
    assert not any(json.dumps(title)[1:-1] in p for title in validation[:60] for p in prompts)
    rows = map_class_labels(read_classification_gold(DATA / "pricerunner/dev.csv"), PRICERUNNER_SHOPIFY)
    sample, _ = split_by_group(rows, 200, 0)  # what `facet eval classify --limit 200 --seed 0` scores
    held = {r.product.title for r in sample}
    cls = [m[-1]["content"] for m, _a in built.pairs["classify"]]
    assert not any(f"Title: {t}\n" in c for t in held for c in cls)
    # every classify answer is a child offered at its level of Shopify's taxonomy
    assert all(a in m[-1]["content"].split("Choose one: ")[1] for m, a in built.pairs["classify"])
    # beside PriceRunner's appliances and phones: OA-Mine's groceries, care products and shoes, and every branch
    top = {a for m, a in built.pairs["classify"] + built.val["classify"] if "Category so far" not in m[-1]["content"]}
    assert {"Electronics", "Home & Garden", "Food, Beverages & Tobacco", "Health & Beauty", "Apparel & Accessories"} <= top
    assert len(top) >= 12


@needs_data
def test_the_shipped_labelled_titles_are_rebuilt_by_the_recipe_and_hold_no_measured_row(tmp_path):
    """`facet train default --which classify` writes the same file; it holds none of the 200 PriceRunner titles
    `facet eval classify --limit 200 --seed 0` scores nor another offer of their products, and no OA-Mine
    validation title."""
    from engine.adapters import SHIPPED_LABELLED
    from eval.datasets import PRICERUNNER_SHOPIFY, map_class_labels, read_classification_gold, split_by_group
    from finetune.default import save_labelled
    from prompts.neighbours import read_labelled

    entry = save_labelled(DATA, tmp_path)
    assert (tmp_path / entry["file"]).read_bytes() == SHIPPED_LABELLED.read_bytes()
    rows = read_labelled(SHIPPED_LABELLED)
    sample, _ = split_by_group(map_class_labels(read_classification_gold(DATA / "pricerunner/dev.csv"),
                                                PRICERUNNER_SHOPIFY), 200, 0)
    titles, groups = {r.title for r in rows}, {r.group for r in rows}
    assert not {r.product.title for r in sample} & titles and not {r.group for r in sample} & groups
    validation = {json.loads(line)["input"] for line in (DATA / "oa-mine/validation.jsonl").open()}
    assert not validation & titles


@needs_data
def test_the_leaf_weight_weighs_the_labelled_titles_last_level_and_nothing_else():
    """``Recipe.classify_leaf_weight``: the same pairs and validation split as without it; the training pairs
    carry weights, the weight on exactly the last level of a PriceRunner or OA-Mine title's path (not on the
    titles made from Shopify's leaves, nor the levels above)."""
    from eval.datasets import OA_MINE_SHOPIFY, PRICERUNNER_SHOPIFY
    from finetune.default import Recipe, build

    small = dict(classify_titles=40, classify_oa_titles=20, classify_synthetic=20, tasks=("classify",))
    plain, weighed = build(DATA, Recipe(**small)), build(DATA, Recipe(**small, classify_leaf_weight=3.0))
    assert plain.weights == {} and weighed.pairs == plain.pairs and weighed.val == plain.val
    weights = weighed.weights["classify"]
    assert len(weights) == len(weighed.pairs["classify"]) and set(weights) == {1.0, 3.0}
    labels = {tuple(p) for p in (*PRICERUNNER_SHOPIFY.values(), *OA_MINE_SHOPIFY.values())}
    only_made = build(DATA, Recipe(**{**small, "classify_titles": 0, "classify_oa_titles": 0}))
    made = {m[-1]["content"] for m, _a in only_made.pairs["classify"] + only_made.val["classify"]}
    for (m, a), w in zip(weighed.pairs["classify"], weights, strict=True):
        text = m[-1]["content"]
        prefix = text.split("Category so far: ")[1].split("\n")[0].split(" > ") if "Category so far" in text else []
        assert w == (3.0 if (*prefix, a) in labels and text not in made else 1.0), (text, a)


def test_train_default_refuses_a_folder_without_the_data(tmp_path, capsys):
    from engine.cli import main

    assert main(["train", "default", "--which", "rank", "--data", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "pass --data DIR" in capsys.readouterr().err


def test_train_default_narrows_tasks_of_one_adapter_only(tmp_path, capsys):
    from engine.cli import main

    (tmp_path / "oa-mine").mkdir()
    (tmp_path / "oa-mine" / "train.jsonl").write_text("")
    assert main(["train", "default", "--data", str(tmp_path), "--tasks", "rank", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "give --which NAME too" in err and "(extract, classify, rank)" in err and "make adapters" in err


@needs_data
def test_train_default_without_which_rebuilds_every_shipped_adapter(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """`facet train default -o DIR` trains each adapter facet ships into DIR/NAME, each provenance naming the
    one-adapter command that rebuilds it (the tiny model, one step each)."""
    from engine.cli import main
    from finetune.default import shipped_members
    from finetune.train import TARGET_MODULES

    argv = ["train", "default", "--data", str(DATA), "--model", str(tiny_model_dir), "-o", str(tmp_path / "set"),
            "--max-steps", "1", "--batch-size", "2", "--layers", "2"]
    monkeypatch.setattr("sys.argv", ["facet", *argv])
    assert main(argv) == 0
    assert shipped_members() == ["extract", "classify", "rank"]
    for name in shipped_members():
        folder = tmp_path / "set" / name
        prov = json.loads((folder / "facet_provenance.json").read_text())
        assert prov["command"] == (f"facet train default --data {DATA} --model {tiny_model_dir} --max-steps 1 "
                                   f"--batch-size 2 --layers 2 --which {name} -o {folder}")
        assert prov["tasks"] == [name] and prov["steps"] == 1 and (folder / "adapter_model.safetensors").is_file()
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["target_modules"] == sorted(TARGET_MODULES)  # the same bytes on every rebuild
    assert (tmp_path / "set" / "classify" / "labelled_titles.jsonl.gz").is_file()
    assert "[3/3] rank" in capsys.readouterr().err


def test_engine_builds_a_task_once_for_repeated_calls(fake_shipped, scripted, monkeypatch):
    """`eng.extract(p)` in a loop reads the example pool once, not once per product."""
    from engine.api import Engine
    from prompts.examples import ExamplePool

    reads = []
    real = ExamplePool.from_jsonl.__func__
    monkeypatch.setattr(ExamplePool, "from_jsonl", classmethod(lambda cls, path: reads.append(path) or real(cls, path)))
    eng = Engine(examples=ROOT / "examples/demonstrations.jsonl")
    eng._backend = scripted(lambda req, n: '{"Brand":"Levi\'s"}')
    for i in range(3):
        assert eng.extract({"id": f"p{i}", "title": "Levi's 501 Jeans"}).ok
    assert len(reads) == 1
    eng.run("extract", [{"title": "x"}], shots=1)  # other options: built for them
    assert len(reads) == 2


def _tiny_shopify(folder: Path) -> Path:
    folder.mkdir()
    (folder / "categories.txt").write_text(
        "gid://shopify/TaxonomyCategory/a : Apparel\ngid://shopify/TaxonomyCategory/a-1 : Apparel > Jeans\n"
        "gid://shopify/TaxonomyCategory/a-2 : Apparel > Shirts\ngid://shopify/TaxonomyCategory/k : Kitchen\n"
        "gid://shopify/TaxonomyCategory/k-1 : Kitchen > Kettles\ngid://shopify/TaxonomyCategory/u : Uncategorized\n")
    (folder / "attributes.json").write_text(json.dumps({"attributes": [
        {"handle": "color", "name": "Color", "values": [{"name": "Red"}, {"name": "Blue"}]}]}))
    (folder / "category_attributes.json").write_text(json.dumps({"categories": {
        "a-1": {"full_name": "Apparel > Jeans", "attributes": ["color"]},
        "k-1": {"full_name": "Kitchen > Kettles", "attributes": []}}}))
    return folder


def test_synthetic_classify_titles_cover_every_branch_with_the_leaf_and_its_values(tmp_path):
    from finetune.data import synthetic_classify_examples

    rows = synthetic_classify_examples(_tiny_shopify(tmp_path / "shopify"), 200, seed=0)
    assert len(rows) == 200 and len({r.product.id for r in rows}) == 200
    paths = {r.path for r in rows}
    assert paths == {("Apparel", "Jeans"), ("Apparel", "Shirts"), ("Kitchen", "Kettles")}  # leaves, not Uncategorized
    # top levels drawn uniformly: Kitchen's one leaf is as common as Apparel's two together
    kitchen = sum(r.path[0] == "Kitchen" for r in rows)
    assert 70 < kitchen < 130
    for r in rows:
        assert r.path[-1] in r.product.title
        extra = r.product.title.replace(r.path[-1], "").replace(",", "").split()
        assert set(extra) <= {"Red", "Blue"}  # only the leaf's own attribute values
    assert any("Red" in r.product.title or "Blue" in r.product.title for r in rows if r.path[-1] == "Jeans")
    assert synthetic_classify_examples(tmp_path / "shopify", 20, seed=0) == rows[:20]  # seeded


def test_balanced_sample_takes_each_label_in_turn():
    from finetune.default import balanced
    from prompts.formats import ClassGold
    from schemas import Product

    rows = [ClassGold(Product(id=str(i), title="t"), (lab,), None) for i, lab in enumerate("a" * 50 + "b" * 5 + "c" * 20)]
    picked = balanced(rows, 24, seed=0)
    counts = {lab: sum(r.path == (lab,) for r in picked) for lab in "abc"}
    assert counts == {"a": 10, "b": 5, "c": 9} or counts == {"a": 9, "b": 5, "c": 10}
    assert len({r.product.id for r in picked}) == 24


@needs_data
def test_the_built_in_label_maps_name_real_shopify_paths():
    from eval.datasets import LABEL_MAPS, OA_MINE_SHOPIFY
    from schemas.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(DATA / "shopify-taxonomy/categories.txt")
    for mapping in LABEL_MAPS.values():
        assert all(path in taxonomy for path in mapping.values())
    categories = {json.loads(line)["category"] for line in (DATA / "oa-mine/train.jsonl").open()}
    assert categories == set(OA_MINE_SHOPIFY)


@needs_data
def test_train_default_writes_the_labelled_titles_beside_a_classification_adapter(tmp_path, tiny_model_dir):
    """`facet train default` on classify pairs saves the vote's titles in the adapter folder, their entry in the
    provenance it writes (the tiny model, a handful of pairs)."""
    from engine.provenance import file_hash
    from finetune.default import Recipe, train_default
    from finetune.train import TrainConfig

    cfg = TrainConfig(task="default", model=str(tiny_model_dir), epochs=1, max_steps=1, batch_size=4, rank=8)
    recipe = Recipe(classify_titles=4, classify_oa_titles=0, classify_synthetic=0, tasks=("classify",))
    prov = train_default(DATA, tmp_path / "a", cfg, recipe, progress=False, command="facet train default")
    saved = json.loads((tmp_path / "a" / "facet_provenance.json").read_text())
    entry = saved["labelled_titles"]
    assert entry == prov["labelled_titles"] and entry["file"] == "labelled_titles.jsonl.gz"
    assert file_hash(tmp_path / "a" / entry["file"]) == entry["sha256"] and entry["rows"] > 30000
