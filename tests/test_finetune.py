"""LoRA training on the tiny random model: loss falls, base untouched, adapter servable, resumable."""

from __future__ import annotations

import json

import pytest

from engine.adapters import adapter_problems, check_adapter
from engine.errors import EngineError
from finetune.data import DataReport, encode, extract_pairs
from finetune.train import TrainConfig, evaluate_loss, train
from prompts.tasks.extract import Extract
from schemas import AttributeSchema, Product

SCHEMA = AttributeSchema.from_mapping({"*": ["Brand", "Color"]})
BRANDS = ["Acme", "Zed", "Bolt", "Nova", "Orbit", "Pico"]
COLORS = ["Red", "Blue", "Green", "Black"]


def gold_rows(n=12):
    from eval.datasets import GoldProduct

    rows = []
    for i in range(n):
        b, c = BRANDS[i % len(BRANDS)], COLORS[i % len(COLORS)]
        rows.append(GoldProduct(Product(id=f"t{i}", title=f"{b} mug {c}"), {"Brand": {b}, "Color": {c}}))
    return rows


def oa_mine_file(path, n=10):
    """The gold rows written as OA-Mine JSONL (category Mugs)."""
    with path.open("w") as fh:
        for r in gold_rows(n):
            fh.write(json.dumps({"input": r.product.title, "category": "Mugs",
                                 "target_scores": {k: sorted(v) for k, v in r.gold.items()}}) + "\n")
    return path


def encoded(tok, rows):
    task = Extract(attribute_schema=SCHEMA)
    return [encode(tok, m, a, 512) for m, a in extract_pairs(task, rows)]


def cfg(**kw):
    return TrainConfig(**{"rank": 8, "lr": 3e-2, "batch_size": 4, "max_steps": 6, "dropout": 0.0, "seed": 1,
                          "checkpoint_every": 2, **kw})


def test_training_lowers_loss_keeps_base_and_writes_a_servable_adapter(tmp_path, tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    tok.padding_side = "right"
    data = encoded(tok, gold_rows())
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    before = evaluate_loss(tiny_model, data, 4, tok.pad_token_id)
    prov = train(tiny_model, tok, data, data[:4], cfg(max_steps=12), tmp_path / "ad", provenance={"task": "extract"},
                 progress=False)
    after = evaluate_loss(tiny_model, data, 4, tok.pad_token_id)
    assert after < before * 0.8, (before, after)
    for k, v in tiny_model.state_dict().items():  # base weights bit-identical
        if "lora_" in k:
            continue
        name = k.removeprefix("base_model.model.").replace(".base_layer", "")
        assert base[name].equal(v), name
    out = tmp_path / "ad"
    assert (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_problems(config) == [] and config["r"] == 8 and config["bias"] == "none"
    p = json.loads((out / "facet_provenance.json").read_text())
    assert p["task"] == "extract" and p["steps"] == 12 and p["base_hidden_size"] == 16 and prov["history"]


@pytest.mark.parametrize("pack", [False, True])
def test_answer_loss_is_the_full_loss_and_gradient_with_logits_at_answer_positions_only(tiny_tokenizer, pack):
    import torch
    from peft import get_peft_model

    from finetune.train import MIN_SHARED, _collate, answer_loss, lora_config, shared_prefix
    from tests.conftest import make_model

    tok = tiny_tokenizer
    tok.padding_side = "right"
    rows = gold_rows(4)
    rows[1] = type(rows[1])(Product(id="long", title="Acme mug with a much longer title than the rest Red"),
                            rows[1].gold)  # rows of different lengths: answers at different positions
    batch = _collate(encoded(tok, rows), tok.pad_token_id, pack=pack)
    model = get_peft_model(make_model(tok), lora_config(TrainConfig(rank=8, dropout=0.0), 2))
    for p in model.parameters():  # LoRA B starts at zero: give the adapter some effect
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    params = [p for p in model.parameters() if p.requires_grad]
    full = model(**batch).loss
    g_full = torch.autograd.grad(full, params)
    embedded = []  # tokens through the model, per call
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: embedded.append(i[0].numel()))
    mine = answer_loss(model, batch)
    hook.remove()
    g_mine = torch.autograd.grad(mine, params)
    assert torch.allclose(mine, full, atol=1e-5), (mine, full)
    for a, b in zip(g_mine, g_full, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    kept = (batch["labels"][:, 1:] != -100).any(dim=0).sum()
    assert 0 < kept < batch["labels"].shape[1] // 2  # the head ran on the answer positions only
    rows, n = batch["input_ids"].shape
    shared = shared_prefix(batch)
    if pack:  # packed rows hold several records: nothing to share
        assert shared == 0 and embedded == [rows * n]
    else:  # the chat header and system prompt ran once, not once per row
        first_answer = min(lab.index(next(t for t in lab if t != -100)) for lab in batch["labels"].tolist())
        assert MIN_SHARED <= shared < first_answer
        assert embedded == [shared, rows * (n - shared)]


def test_training_resumes_after_an_interruption(tmp_path, tiny_tokenizer, monkeypatch):
    from safetensors.torch import load_file

    import finetune.train as ft
    from tests.conftest import make_model

    tok = tiny_tokenizer
    tok.padding_side = "right"
    data = encoded(tok, gold_rows())
    train(make_model(tok), tok, data, data[:4], cfg(), tmp_path / "straight", progress=False)

    real, calls = ft._checkpoint, []

    def crash_after_first(*a, **k):
        real(*a, **k)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ft, "_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(tok), tok, data, data[:4], cfg(), tmp_path / "resumed", progress=False)
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["step"] == 2
    prov = train(make_model(tok), tok, data, data[:4], cfg(), tmp_path / "resumed", resume=True, progress=False)
    assert prov["steps"] == 6
    a = load_file(str(tmp_path / "straight/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed/adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def test_restart_schedule_warms_up_and_decays_within_every_epoch():
    from finetune.train import lr_factor

    linear = [lr_factor(s, 20, 0.1, 10) for s in range(20)]
    restart = [lr_factor(s, 20, 0.1, 10, "restart") for s in range(20)]
    assert linear[:2] == [0.5, 1.0] and linear[-1] < 0.1 and linear[10] > 0.5  # one decay over both epochs
    assert restart[:10] == [lr_factor(s, 10, 0.1, 10) for s in range(10)]  # epoch 1 = a one-epoch run
    assert restart[10:] == restart[:10]  # epoch 2 starts again
    assert [lr_factor(s, 15, 0.1, 10, "restart") for s in range(10, 15)][-1] > 0  # a last, shorter epoch decays too


def test_a_one_epoch_restart_run_resumed_for_a_second_epoch_is_the_two_epoch_run(tmp_path, tiny_tokenizer):
    from safetensors.torch import load_file

    from tests.conftest import make_model

    tok = tiny_tokenizer
    tok.padding_side = "right"
    data = encoded(tok, gold_rows())
    two = cfg(max_steps=None, epochs=2, schedule="restart", patience=5)
    train(make_model(tok), tok, data, data[:4], two, tmp_path / "straight", progress=False)
    train(make_model(tok), tok, data, data[:4], cfg(max_steps=None, epochs=1, schedule="restart"), tmp_path / "more",
          progress=False)
    prov = train(make_model(tok), tok, data, data[:4], two, tmp_path / "more", resume=True, progress=False)
    assert prov["epochs_run"] == 2
    with pytest.raises(ValueError, match="--schedule restart; resume it with the same"):
        train(make_model(tok), tok, data, data[:4], cfg(max_steps=None, epochs=3), tmp_path / "more", resume=True,
              progress=False)
    a = load_file(str(tmp_path / "straight/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "more/adapter_model.safetensors"))
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def test_train_and_inference_prompts_are_identical_and_answer_fits_the_grammar(tiny_backend, tiny_tokenizer):
    import llguidance
    import llguidance.hf

    from engine.backends.grammar import llguidance_spec

    task = Extract(attribute_schema=SCHEMA)
    row = gold_rows(1)[0]
    (messages, answer), = extract_pairs(task, [row])
    ex = encode(tiny_tokenizer, messages, answer, 512)
    req = task.build(row.product)
    infer_ids = tiny_tokenizer(tiny_backend.prompt_text(req), add_special_tokens=False).input_ids
    n = len(infer_ids)
    assert ex["input_ids"][:n] == infer_ids and all(x == -100 for x in ex["labels"][:n])
    assert tiny_tokenizer.decode(ex["input_ids"][n:]) == answer + "<|im_end|>"
    # the gold answer is exactly a string the constrained decoder may emit
    matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tiny_tokenizer), llguidance_spec(req.constraint))
    assert matcher.consume_tokens(ex["input_ids"][n:]), matcher.get_error()
    assert matcher.is_accepting()


def test_bad_training_data_is_reported_per_record():
    from eval.datasets import GoldProduct

    rows = [
        GoldProduct(Product(id="ok", title="Acme mug Red"), {"Brand": {"Acme"}, "Color": {"Red"}}),
        GoldProduct(Product(id="nogold", title="Zed mug"), {"Brand": None}),
        GoldProduct(Product(id="outside", title="Zed mug"), {"Brand": {"Zed"}, "Weight": {"2kg"}}),
        GoldProduct(Product(id="notintext", title="Zed mug"), {"Brand": {"Bolt"}}),
    ]
    report = DataReport()
    pairs = extract_pairs(Extract(attribute_schema=SCHEMA), rows, report)
    assert report.usable == len(pairs) == 3
    text = report.text()
    assert "record without gold values (skipped)" in text and "nogold" in text
    assert "attribute outside the schema" in text and "outside:Weight" in text
    assert "gold value not in the text" in text and "notintext" in text


def test_train_refuses_an_unusable_set(tmp_path, tiny_model_dir, capsys):
    from engine.cli import main

    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps({"input": f"x{i}", "target_scores": {"Brand": ["n/a"]}}) + "\n" for i in range(5)))
    assert main(["train", "extract", "--train", str(f), "-o", str(tmp_path / "a"), "--model", str(tiny_model_dir)]) != 0
    err = capsys.readouterr().err
    assert "record without gold values" in err and "0 usable training records" in err
    args = ["train", "complete", "--train", str(f), "--examples", str(f), "-o", str(tmp_path / "c")]
    assert main(args) != 0 and "only `facet train extract` supports" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["train", "extract", "--train", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "b")]) != 0
    assert "holds no records" in capsys.readouterr().err


def test_cli_train_then_extract_with_the_adapter(tmp_path, tiny_model_dir):
    from engine.cli import main

    f = oa_mine_file(tmp_path / "train.jsonl")
    ad = tmp_path / "adapter"
    assert main(["train", "extract", "--train", str(f), "-o", str(ad), "--model", str(tiny_model_dir),
                 "--max-steps", "2", "--rank", "8", "--batch-size", "4"]) == 0
    prov = json.loads((ad / "facet_provenance.json").read_text())
    assert prov["train_data_hash"] and prov["template_hash"] and prov["config"]["rank"] == 8
    assert json.loads((ad / "attributes.json").read_text()) == {"Mugs": ["Brand", "Color"]}
    check_adapter(ad)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q", "title": "Nova mug Green", "category": "Mugs"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--adapter", str(ad), "-q"]) == 0
    rec = json.loads(out.read_text())
    assert rec["ok"] and {a["name"] for a in rec["attributes"]} | set(rec["missing"]) == {"Brand", "Color"}


def test_incompatible_adapters_are_refused(tmp_path, tiny_backend):
    for name, change in {"dora": {"use_dora": True}, "bias": {"bias": "all"}, "rank": {"r": 12},
                         "mts": {"modules_to_save": ["lm_head"]}}.items():
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "bias": "none", **change}))
        with pytest.raises(EngineError, match="not servable"):
            tiny_backend.load_adapter(name, str(d))
    with pytest.raises(EngineError, match="no adapter_config.json"):
        tiny_backend.load_adapter("x", str(tmp_path))


def test_one_batch_mixes_adapters_per_request(tmp_path, tiny_tokenizer):
    from engine.backends.transformers import TransformersBackend
    from engine.types import JsonSchema, Request
    from tests.conftest import make_model

    tok = tiny_tokenizer
    tok.padding_side = "right"
    data = encoded(tok, gold_rows())
    for name, seed in (("a", 1), ("b", 2)):
        train(make_model(tok), tok, data, [], cfg(seed=seed, max_steps=3, lr=5e-2), tmp_path / name, progress=False)
    backend = TransformersBackend(make_model(tok), tok, batch_size=8, adapters={"a": str(tmp_path / "a"),
                                                                                 "b": str(tmp_path / "b")})
    schema = JsonSchema(Extract(attribute_schema=SCHEMA).schema(Product(id="1", title="Zed mug Blue")))
    msgs = ({"role": "user", "content": "Zed mug Blue"},)
    reqs = [Request(prompt=msgs, constraint=schema, max_new_tokens=40, adapter=a) for a in ("a", None, "b")]
    mixed = backend.generate(reqs)
    alone = [backend.generate([r])[0] for r in reqs]
    assert [c.text for c in mixed] == [c.text for c in alone]


def test_augmented_variants_keep_every_gold_value_a_span_of_the_title():
    from eval.datasets import GoldProduct
    from finetune.data import augment

    rows = [GoldProduct(Product(id="a", title="Acme Travel Mug, Red, 12 oz, 2 Pack"),
                        {"Brand": {"Acme"}, "Color": {"Red"}, "Size": {"12 oz"}, "Pack": {"2 Pack"}})]
    out = augment(rows, copies=3, seed=0)
    kinds = {r.product.id.split("~")[1]: r for r in out}
    assert set(kinds) == {"reorder", "drop", "lower"}
    for r in out:
        assert r.product.title != rows[0].product.title
        assert all(any(v in r.product.title for v in vals) for vals in r.gold.values() if vals)
    assert kinds["reorder"].product.title.startswith("Acme Travel Mug,") and kinds["reorder"].gold == rows[0].gold
    dropped = set(rows[0].gold) - set(kinds["drop"].gold)
    assert len(dropped) == 1 and not any(v in kinds["drop"].product.title for v in rows[0].gold[dropped.pop()])
    assert kinds["lower"].gold["Brand"] == {"acme"}
    # a title the changes cannot apply to yields fewer variants, never a wrong one
    assert [r.product.id for r in augment([GoldProduct(Product(id="b", title="acme"), {"Brand": {"acme"}})], 3)] == []


def test_classify_adapter_trains_on_the_classifier_prompts_and_holds_out_the_eval_sample(tmp_path, tiny_model_dir):
    import csv

    from engine.cli import main
    from eval.datasets import read_classification_gold, split_by_group
    from finetune.data import classify_pairs
    from prompts.tasks.classify import Classify
    from schemas.taxonomy import Taxonomy

    f = tmp_path / "dev.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Product ID", "Product Title", "Category Label", "Cluster ID"])
        for i in range(40):
            w.writerow([i, f"{BRANDS[i % 6]} thing {i}", ["Mugs", "Lamps"][i % 2], i // 2])
    rows = read_classification_gold(f)
    task = Classify(taxonomy=Taxonomy([r.path for r in rows]))
    pairs = classify_pairs(task, rows[:3])
    assert [a for _, a in pairs] == ["Mugs", "Lamps", "Mugs"]
    assert pairs[0][0] == task.messages(rows[0].product, ())  # the very prompt the classifier scores
    ad = tmp_path / "cls"
    assert main(["train", "classify", "--train", str(f), "-o", str(ad), "--model", str(tiny_model_dir),
                 "--holdout", "10", "--max-steps", "2", "--rank", "8", "--batch-size", "4"]) == 0
    prov = json.loads((ad / "facet_provenance.json").read_text())
    sample, rest = split_by_group(rows, 10, 0)
    assert prov["task"] == "classify" and prov["holdout"] == 10
    assert prov["train_records"] + prov["val_records"] == len(rest)  # the eval sample and its clusters left out
    check_adapter(ad)


def test_training_with_demonstrations_never_shows_a_record_its_own_answer():
    from finetune.data import augment
    from prompts.examples import Example, ExamplePool

    rows = gold_rows(12)
    pool = ExamplePool([Example(r.product.model_copy(update={"id": f"pool-{i}"}),
                                {k: sorted(v)[0] for k, v in r.gold.items()}) for i, r in enumerate(rows)])
    task = Extract(attribute_schema=SCHEMA, examples=pool, shots=3)
    sources = {r.product.id: r.product.title for r in rows}
    variants = augment(rows, 1, seed=0)
    assert variants and all("~" in v.product.id for v in variants)
    for row in rows + variants:
        (messages, answer), = extract_pairs(task, [row], sources=sources)
        source_title = sources[row.product.id.split("~")[0]]
        shown = [m["content"] for m in messages if m["role"] == "user"][:-1]
        assert len(shown) == 3  # three demonstrations, then the question
        assert not any(f"Title: {t}\n" in s for s in shown for t in {row.product.title, source_title}), row.product.id
    # at inference, nothing is left out: an identical title in the pool is a fair (and useful) demonstration
    q = rows[0].product.model_copy(update={"id": "new"})
    assert any(f"Title: {q.title}\n" in m["content"] for m in task.messages(q)[:-1])


def test_cli_train_with_demonstrations_records_them_and_warns_without(tmp_path, tiny_model_dir, capsys):
    from engine.cli import main

    f = oa_mine_file(tmp_path / "train.jsonl")
    ad = tmp_path / "adapter"
    assert main(["train", "extract", "--train", str(f), "--examples", str(f), "--shots", "2", "-o", str(ad),
                 "--model", str(tiny_model_dir), "--max-steps", "1", "--rank", "8", "--batch-size", "4"]) == 0
    prov = json.loads((ad / "facet_provenance.json").read_text())
    assert prov["shots"] == 2 and prov["examples"] == str(f) and prov["examples_hash"]
    assert prov["config"]["max_len"] == 1024
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q", "title": "Nova mug Green", "category": "Mugs"}) + "\n")
    capsys.readouterr()
    args = ["extract", str(src), "-o", str(tmp_path / "o1.jsonl"), "--model", str(tiny_model_dir), "--adapter", str(ad),
            "-q", "--max-new-tokens", "8"]
    assert main(args) == 0
    assert "trained with 2 demonstrations" in capsys.readouterr().err
    assert main([*args[:3], str(tmp_path / "o2.jsonl"), *args[4:], "--examples", str(f)]) == 0
    assert "demonstrations" not in capsys.readouterr().err
    from engine.api import Engine

    with pytest.warns(UserWarning, match="trained with 2 demonstrations"):
        Engine(str(tiny_model_dir), adapter=str(ad))


def test_complete_pairs_are_the_completion_prompts_and_answers_fit_the_grammar(tiny_backend, tiny_tokenizer):
    import llguidance
    import llguidance.hf

    from engine.backends.grammar import llguidance_spec
    from eval.datasets import GoldProduct
    from finetune.data import complete_pairs
    from prompts.tasks.complete import Complete

    schema = AttributeSchema.from_mapping({"Mugs": ["Brand", "Color", "Size"]})
    task = Complete(schema)
    row = GoldProduct(Product(id="m1", title="Acme mug Red, 12 oz", category="Mugs"),
                      {"Brand": {"Acme"}, "Color": {"Red"}, "Size": None})
    report = DataReport()
    pairs = complete_pairs(task, [row], report, copies=2)
    assert report.usable == 1 and len(pairs) == 2  # two different attributes hidden in turn
    hidden_seen = set()
    for messages, answer in pairs:
        data = json.loads(answer)
        hidden = next(k for k, v in data.items() if v is not None)
        hidden_seen.add(hidden)
        assert data == {hidden: {"Brand": "Acme", "Color": "Red"}[hidden], "Size": None}  # unlisted -> null
        known = {"Brand": "Acme", "Color": "Red"}
        known.pop(hidden)
        product = row.product.model_copy(update={"attributes": known})
        req = task.build(product)
        assert messages == list(req.prompt)  # exactly the prompt `facet complete` sends
        ex = encode(tiny_tokenizer, messages, answer, 512)
        n = len(tiny_tokenizer(tiny_backend.prompt_text(req), add_special_tokens=False).input_ids)
        matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tiny_tokenizer), llguidance_spec(req.constraint))
        assert matcher.consume_tokens(ex["input_ids"][n:]), matcher.get_error()
        assert matcher.is_accepting()
    assert hidden_seen == {"Brand", "Color"}
    bad = GoldProduct(Product(id="m2", title="Zed mug", category="Mugs"), {"Brand": {"Bolt"}})
    assert complete_pairs(task, [bad], report) == [] and "not a span of the text" in report.text()


def test_complete_pairs_several_hide_half_the_values_at_once(tiny_tokenizer):
    from eval.datasets import GoldProduct
    from finetune.data import complete_pairs
    from prompts.tasks.complete import Complete

    schema = AttributeSchema.from_mapping({"Mugs": ["Brand", "Color", "Size", "Material"]})
    task = Complete(schema)
    row = GoldProduct(Product(id="m1", title="Acme ceramic mug Red, 12 oz", category="Mugs"),
                      {"Brand": {"Acme"}, "Color": {"Red"}, "Size": {"12 oz"}, "Material": {"glass"}})
    report = DataReport()
    pairs = complete_pairs(task, [row], report, several=True)
    assert report.usable == 1 and len(pairs) == 2  # the one-hidden pair, then the several-hidden one
    messages, answer = pairs[1]
    data = json.loads(answer)
    filled = {k for k, v in data.items() if v is not None}
    assert len(filled) >= 1 and all(data[k] == {"Brand": "Acme", "Color": "Red", "Size": "12 oz"}[k] for k in filled)
    # what was hidden but is no span of the text ("glass") goes back to the known values, never into the answer
    known = {k: v for k, v in {"Brand": "Acme", "Color": "Red", "Size": "12 oz", "Material": "glass"}.items()
             if k not in data}
    assert set(data) | set(known) == {"Brand", "Color", "Size", "Material"}
    assert messages == list(task.build(row.product.model_copy(update={"attributes": known})).prompt)
    spans = GoldProduct(row.product, {**row.gold, "Material": {"ceramic"}})
    answers = [json.loads(a) for _, a in complete_pairs(task, [spans], several=True)]
    assert sum(v is not None for v in answers[1].values()) == 2  # half of four values, all spans, filled at once
    one_value = GoldProduct(Product(id="m3", title="Acme mug", category="Mugs"), {"Brand": {"Acme"}})
    assert len(complete_pairs(task, [one_value], several=True)) == 1  # nothing more to hide with a single value


def test_cli_train_complete_then_complete_with_the_adapter(tmp_path, tiny_model_dir):
    from engine.cli import main

    f = oa_mine_file(tmp_path / "train.jsonl")
    ad = tmp_path / "adapter"
    val = oa_mine_file(tmp_path / "val.jsonl", 6)
    assert main(["train", "complete", "--train", str(f), "--val", str(val), "-o", str(ad), "--model",
                 str(tiny_model_dir), "--max-steps", "2", "--rank", "8", "--batch-size", "4"]) == 0
    prov = json.loads((ad / "facet_provenance.json").read_text())
    assert prov["task"] == "complete" and prov["template_hash"]
    assert prov["val_data"] == str(val) and prov["val_records"] == 6 and prov["train_records"] == 10
    assert json.loads((ad / "attributes.json").read_text()) == {"Mugs": ["Brand", "Color"]}
    check_adapter(ad)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q", "title": "Nova mug Green", "category": "Mugs",
                               "attributes": {"Brand": "Nova"}}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["complete", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--adapter", str(ad), "-q"]) == 0
    rec = json.loads(out.read_text())
    assert rec["ok"] and rec["given"] == {"Brand": "Nova"}
    assert {x["name"] for x in rec["filled"] + rec["abstained"]} == {"Color"}
    from engine.api import Engine

    # the Python API asks a complete adapter the attributes it was trained on, as the CLI does
    res = Engine(str(tiny_model_dir), adapters={"complete": str(ad)}).complete(
        {"id": "q", "title": "Nova mug Green", "category": "Mugs", "attributes": {"Brand": "Nova"}})
    assert {x.name for x in res.filled + res.abstained} == {"Color"}


def test_packed_rows_give_the_same_loss_as_padded_rows(tiny_model, tiny_tokenizer):
    """Packing shares rows between records; the block-diagonal mask must keep them apart (the loss would
    change if a record could attend to the one packed before it)."""
    import torch

    from finetune.train import _collate

    tok = tiny_tokenizer
    data = encoded(tok, gold_rows(6))
    data[1] = {k: v[:-3] for k, v in data[1].items()}  # unequal lengths: padding in the padded batch
    tiny_model.eval()
    with torch.no_grad():
        padded = _collate(data, tok.pad_token_id)
        packed = _collate(data, tok.pad_token_id, pack=True, pack_len=4 * max(len(d["input_ids"]) for d in data))
        assert packed["input_ids"].shape[0] < len(data)  # records really share rows
        assert float(tiny_model(**packed).loss) == pytest.approx(float(tiny_model(**padded).loss), abs=1e-5)


def test_length_plan_takes_every_record_once_with_less_padding():
    import random

    from finetune.train import epoch_plan

    rng = random.Random(0)
    lengths = [rng.randrange(100, 300) for _ in range(1000)]

    def padding(plan):
        return sum(max(lengths[i] for i in s) * len(s) - sum(lengths[i] for i in s) for s in plan)

    for batching in ("length", "random", "pack"):
        plan = epoch_plan(lengths, 8, random.Random(1), batching)
        assert sorted(i for s in plan for i in s) == list(range(1000)) and all(len(s) <= 8 for s in plan)
    assert padding(epoch_plan(lengths, 8, random.Random(1), "length")) < padding(
        epoch_plan(lengths, 8, random.Random(1), "random")) / 5
    # seeded: the same plan again (a resumed run replays it)
    assert epoch_plan(lengths, 8, random.Random(1)) == epoch_plan(lengths, 8, random.Random(1))


@pytest.mark.parametrize("batching", ["random", "pack"])
def test_other_batchings_train(tmp_path, tiny_tokenizer, batching):
    from tests.conftest import make_model

    tok = tiny_tokenizer
    data = encoded(tok, gold_rows())
    before = evaluate_loss(make_model(tok), data, 4, tok.pad_token_id)
    model = make_model(tok)
    train(model, tok, data, data[:4], cfg(max_steps=12, batching=batching), tmp_path / "ad", progress=False)
    assert evaluate_loss(model, data, 4, tok.pad_token_id) < before * 0.8


def test_an_adapter_asked_through_another_template_text_is_warned(tmp_path):
    from prompts.render import prompt_mismatch, template_hash, template_source

    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "facet_provenance.json").write_text(json.dumps(
        {"task": "extract", "template": "extract.j2", "template_hash": template_hash("extract.j2"), "shots": 0}))
    assert prompt_mismatch(ad, False, "extract.j2") is None
    same = tmp_path / "copy.j2"
    same.write_text(template_source("extract.j2"))
    assert prompt_mismatch(ad, False, str(same)) is None  # the same text under another name is the same prompt
    trained = tmp_path / "trained.j2"  # an adapter trained through a template file still on disk
    trained.write_text(template_source("extract.j2"))
    (ad / "facet_provenance.json").write_text(json.dumps(
        {"task": "extract", "template": str(trained), "template_hash": template_hash(str(trained)), "shots": 0}))
    commented = tmp_path / "commented.j2"
    commented.write_text("{# my notes #}" + template_source("extract.j2"))
    assert prompt_mismatch(ad, False, str(commented)) is None  # comments render nothing
    moved = tmp_path / "moved.j2"
    moved.write_text(template_source("extract.j2").replace("Attributes:", "Fields:"))
    warning = prompt_mismatch(ad, False, str(moved))
    assert warning and f"trained on prompts from template {trained}" in warning and "--template" in warning
    with pytest.warns(UserWarning, match="laid out differently"):
        from engine.api import Engine

        Engine("unused-model", adapter=str(ad), template=str(moved))


@pytest.mark.parametrize("pack", [False, True])
def test_a_record_of_weight_3_pulls_as_three_copies_of_it(tiny_model, tiny_tokenizer, pack):
    """Loss weights (``encode(..., weight=)``, the recipe's leaf weight): each answer token's loss times its
    record's weight, over the number of answer tokens, so weight 3 is the unweighted loss plus the record's own
    token losses twice more; records without a weight, and batches without any, are unchanged."""
    import torch

    from finetune.train import _collate, answer_loss

    tok = tiny_tokenizer
    tok.padding_side = "right"
    rows = gold_rows(4)
    plain = encoded(tok, rows)
    weighted = [encode(tok, m, a, 512, 3.0 if i == 1 else 1.0)
                for i, (m, a) in enumerate(extract_pairs(Extract(attribute_schema=SCHEMA), rows))]
    assert [set(d) for d in weighted] == [{"input_ids", "labels"}, {"input_ids", "labels", "weight"},
                                          {"input_ids", "labels"}, {"input_ids", "labels"}]
    tiny_model.eval()
    with torch.no_grad():
        base = float(answer_loss(tiny_model, _collate(plain, tok.pad_token_id, pack=pack)))
        mine = float(answer_loss(tiny_model, _collate(weighted, tok.pad_token_id, pack=pack)))
        one = _collate([plain[1]], tok.pad_token_id)
        own = float(answer_loss(tiny_model, one))  # record 1's mean token loss
    n_all = sum(sum(t != -100 for t in d["labels"][1:]) for d in plain)
    n_one = sum(t != -100 for t in plain[1]["labels"][1:])
    assert mine == pytest.approx(base + 2 * own * n_one / n_all, rel=1e-4)
    assert mine > base


def test_shared_prefix_stops_before_the_first_answer_and_is_the_full_loss(tiny_tokenizer):
    """Rows with the same prompt and different answers share everything up to the position that predicts the first
    answer token, which must keep its logits; rows that differ early, a single row and packed rows share nothing."""
    import torch

    from finetune.train import _collate, answer_loss, shared_prefix
    from tests.conftest import make_model

    tok = tiny_tokenizer
    tok.padding_side = "right"
    same = gold_rows(2)
    same[1] = type(same[1])(same[0].product, {"Brand": {"Zed"}, "Color": {"Blue"}})  # same prompt, another answer
    data = encoded(tok, same)
    batch = _collate(data, tok.pad_token_id)
    first_answer = min(d["labels"].index(next(t for t in d["labels"] if t != -100)) for d in data)
    assert shared_prefix(batch) == first_answer - 1
    model = make_model(tok)
    with torch.no_grad():
        assert float(answer_loss(model, batch)) == pytest.approx(float(model(**batch).loss), abs=1e-5)
    assert shared_prefix(_collate(data[:1], tok.pad_token_id)) == 0
    assert shared_prefix(_collate(data, tok.pad_token_id, pack=True)) == 0
    other = dict(data[1], input_ids=[data[1]["input_ids"][0] + 1, *data[1]["input_ids"][1:]])  # differs at token 0
    assert shared_prefix(_collate([data[0], other], tok.pad_token_id)) == 0
    short = [{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8]}] * 2  # the answer starts at once: nothing to share
    assert shared_prefix(_collate(short, tok.pad_token_id)) == 0
