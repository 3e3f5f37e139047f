"""normalize: rules decide what they can (units, numbers, wrangling, expansions, colours), the model the rest."""

from __future__ import annotations

import json

import pytest

from prompts.tasks.normalize import Normalize, choose_colour, convert_unit, normalize_many, to_number
from schemas import ErrorRecord, Product
from schemas.normalization import NormalizationSpec, NormRule

CM = NormRule(attribute="Width", op="unit", unit="cm", default_unit="inch", decimals=1)
COLOURS = ["Black", "White", "Brown", "Green", "Beige", "Gray and Metallic", "Blue", "Red", "Pink", "Yellow",
           "Purple", "Assorted/Others", "No Color/Transparent"]


@pytest.mark.parametrize(("raw", "want"), [
    ("6In", "15.2"), ('9"', "22.9"), ("29-1/2", "74.9"), ("2 3/8", "6.0"), ('1/2"', "1.3"), ('.70"', "1.8"),
    ("2200ft", "67056.0"), ("60yds", "5486.4"), ("300 mm", "30.0"), ("10-12 in", "30.5"), ("48", "121.9"),
])
def test_lengths_convert_to_the_target_unit(raw, want):
    assert convert_unit(raw, CM) == want


def test_other_quantities_and_values_without_a_quantity():
    assert convert_unit("32 fl oz", NormRule(attribute="V", op="unit", unit="ml", decimals=0)) == "946"
    assert convert_unit("1TB", NormRule(attribute="S", op="unit", unit="GB", decimals=0)) == "1000"
    assert convert_unit("2.2 lb", NormRule(attribute="W", op="unit", unit="g", decimals=0)) == "998"
    assert convert_unit("Large", CM) is None
    assert convert_unit("3 kg", CM) is None  # incompatible: left for the caller to keep as given


@pytest.mark.parametrize(("raw", "want"), [("50/Pack", "50"), ("1,000/Box", "1000"), ("six", "6"),
                                           ("10K RPM", "10000"), ("Dual Port", "2"), ("many", None)])
def test_counts(raw, want):
    assert to_number(raw) == want


@pytest.mark.parametrize(("raw", "want"), [
    ("Sky Blue", "Blue"), ("Cyan", "Blue"), ("Light Gray/Light Gray", "Gray and Metallic"), ("Silver", "Gray and Metallic"),
    ("spring green, carnation, sky blue, canary yellow", "Assorted/Others"), ("Clear", "No Color/Transparent"),
    ("Black/Red", "Black"), ("Manila", None)])
def test_colours_map_onto_colour_families_with_webcolors(raw, want):
    assert choose_colour(raw, COLOURS) == want


def test_wdc_descriptions_become_rules(tmp_path):
    f = tmp_path / "descriptions.csv"
    header = "Category;Attribute;Normalization_params;Normalization_instruction;Normalization_Function_Description\n"
    rows = [
        'Office;Width;[Unit Conversion];"Convert to centimeters (cm). If no unit is specified, assume inches. '
        'Output rounded to one decimal place.";None',
        'Office;Color(s);[Color Generalization];"Categorize into ONLY ONE of the following options:\n-Black\n-Blue\n'
        '-Assorted/Others";None',
        'Office;Retail UPC;[Substring Extraction];Extract the Manufacturer Code from a Retail UPC by isolating digits 2 to 6.;None',
        'PC;Capacity;[Unit Expansion];"Replace \'GB\' with \'Gigabytes\' and \'TB\' with \'Terabytes\'.";None',
        'PC;Manufacturer;[Name Expansion];Expand it.;"def f(text):\n  text = text.replace(""HPE"", ""Hewlett-Packard '
        'Enterprise"")\n  text = text.replace(""HP"", ""Hewlett-Packard"")\n  for i in range(1, 10):\n    text = '
        'text.replace(f""G{i}"", f""Generation {i}"")"',
        "PC;Clock Speed;None;None;None",
    ]
    f.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    spec = NormalizationSpec.load(f)
    task = Normalize(spec)
    width = spec.rule_for("Office", "Width")
    assert (width.op, width.unit, width.default_unit, width.decimals) == ("unit", "cm", "inch", 1)
    assert spec.rule_for("Office", "Color(s)").options == ["Black", "Blue", "Assorted/Others"]
    assert task.rule_value(spec.rule_for("Office", "Retail UPC"), "021200726125") == ("21200", "rule:substring")
    assert task.rule_value(spec.rule_for("PC", "Capacity"), "300-GB")[0] == "300 Gigabytes"
    assert task.rule_value(spec.rule_for("PC", "Capacity"), "6Gb")[0] == "6 Gigabytes"
    man = spec.rule_for("PC", "Manufacturer")
    assert task.rule_value(man, "HPE")[0] == "Hewlett-Packard Enterprise"
    assert task.rule_value(man, "HP G8")[0] == "Hewlett-Packard Generation 8"
    assert task.rule_value(spec.rule_for("PC", "Clock Speed"), "2.4GHz") == ("2.4GHz", "none")
    assert spec.rule_for("Office", "Depth") is None


def test_a_spec_that_does_not_parse_names_the_file(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text('{"rules": [{"attribute": "Width", "op": "convert"}]}')
    with pytest.raises(ValueError, match="spec.json"):
        NormalizationSpec.load(bad)
    with pytest.raises(FileNotFoundError):
        NormalizationSpec.load(tmp_path / "missing.json")


SPEC = NormalizationSpec(
    aliases={"colour": "Color"},
    rules=[NormRule(attribute="Color", op="choose", options=["Black", "Blue", "Other colour"]),
           NormRule(attribute="Fit", op="choose", options=["Slim", "Regular"]),
           NormRule(attribute="Length", op="unit", unit="cm", default_unit="inch", decimals=1),
           NormRule(attribute="Brand", op="upper")])


def test_names_values_merges_drops_and_an_audit_trail(scripted):
    def answer(req, _call):
        text = req.prompt[-1]["content"]
        if "Attribute name: Hue" in text:
            return "Color"
        if "Attribute name: Warranty" in text:
            return "other"
        if "Value: original" in text:
            return "Regular"
        raise AssertionError(text)

    backend = scripted(answer)
    p = Product(id="a", title="Acme jeans", category="Jeans",
                attributes={"brand ": "acme", "colour": "navy", "Hue": "black", "Warranty": "2 years",
                            "Length": "34\"", "Fit": "original"})
    [res] = normalize_many(backend, Normalize(SPEC), [p])
    assert res.attributes == {"Brand": "ACME", "Color": "Blue", "Length": "86.4", "Fit": "Regular"}
    log = {(c.attribute, c.field, c.by) for c in res.changes}
    assert ("Brand", "name", "rule:spelling") in log and ("Color", "name", "alias") in log
    assert ("Color", "value", "colour") in log and ("Length", "value", "rule:unit") in log
    assert ("Color", "merged", "rule:merge") in log  # Hue -> Color, a second value of it
    assert ("Warranty", "dropped", "model") in log and ("Fit", "value", "model") in log
    # one batched call for the names, one for the values
    assert len(backend.calls) == 2


def test_bad_records_become_errors_and_a_bad_model_answer_is_a_warning(scripted):
    backend = scripted(lambda req, _c: "Purple")  # not an allowed value
    items = [Product(id="empty", title="x"), Product(id="ok", title="y", attributes={"Fit": "baggy"})]
    empty, ok = normalize_many(backend, Normalize(SPEC), items)
    assert isinstance(empty, ErrorRecord) and "no attributes" in empty.error
    assert ok.attributes == {"Fit": "baggy"} and "could not map 'baggy'" in ok.warnings[0]


def test_demonstrations_decide_by_the_nearest_value_before_the_model(scripted):
    demos = ({"title": "Other jeans", "category": "Jeans", "attribute": "Fit", "value": "skinny slim cut",
              "answer": "Slim"},)
    backend = scripted(lambda req, _c: pytest.fail("the model was asked"))
    [res] = normalize_many(backend, Normalize(SPEC, examples=demos),
                           [Product(id="a", title="Acme jeans", category="Jeans", attributes={"Fit": "skinny"})])
    assert res.attributes == {"Fit": "Slim"} and res.changes[-1].by == "examples"


def test_rule_only_work_never_loads_a_model(tmp_path):
    """--model points nowhere: fine, as long as no value needs the model."""
    from engine.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "title": "t", "attributes": {"Length": "10 in", "brand": "acme"}}) + "\n"
                   + "not json\n")
    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.model_dump_json())
    out = tmp_path / "out.jsonl"
    assert main(["normalize", str(src), "--spec", str(spec), "-o", str(out), "--model", str(tmp_path / "none"),
                 "-q"]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["ok"] for r in recs] == [False, True]  # the bad line is an error record; the run went on
    assert recs[1]["attributes"] == {"Length": "25.4", "Brand": "ACME"}


def test_eval_scores_per_operation(tmp_path):
    from eval.datasets import read_normalization_gold
    from eval.harness import evaluate_normalization

    raw, norm = tmp_path / "train.jsonl", tmp_path / "train_normalized.jsonl"
    raw.write_text(json.dumps({"id": 1, "category": "C", "input_title": "t", "target_scores": {
        "Length": {"10 in": {"pid": [0]}}, "Brand": {"acme": {"pid": [0]}}, "Color": {"n/a": 1}}}) + "\n")
    norm.write_text(json.dumps({"id": 1, "category": "C", "input_title": "t", "target_scores": {
        "Length": {"25.4": {"pid": [0]}}, "Brand": {"Acme": {"pid": [0]}}, "Color": {"n/a": 1}}}) + "\n")
    rows = read_normalization_gold(raw)
    assert rows[0].product.attributes == {"Length": "10 in", "Brand": "acme"}
    report = evaluate_normalization(None, Normalize(SPEC), raw, rows, progress=False)
    ops = {o["operation"]: o["f1"] for o in report["operations"]}
    assert ops == {"unit conversion": 1.0, "string wrangling": 0.0}  # ACME != Acme: wrong value, FP + FN
    assert report["summary"]["micro_f1"] == 0.5


def test_engine_normalize_takes_a_spec_file_and_plain_dicts(tmp_path, scripted):
    from engine.api import Engine

    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.model_dump_json())
    eng = Engine(backend=scripted(lambda req, _c: "Slim"))
    r = eng.normalize({"title": "Acme jeans", "attributes": {"Length": "1 ft", "Fit": "skinny"}}, spec)
    assert r.attributes == {"Length": "30.5", "Fit": "Slim"}


def test_engine_extract_with_a_spec_normalizes_what_it_found(tmp_path, scripted):
    from engine.api import Engine

    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.model_dump_json())
    eng = Engine(backend=scripted(lambda req, _c: '{"Length":"1 ft"}'), attributes={"*": ["Length"]})
    r = eng.extract({"title": "Acme ruler 1 ft"}, spec=spec)
    assert r.as_dict() == {"Length": "1 ft"} and r.normalized.attributes == {"Length": "30.5"}
    assert (eng.stats.done, eng.stats.failed) == (1, 0)  # one product, counted once through both steps
    assert eng.extract({"title": "Acme ruler 1 ft"}).normalized is None


def test_render_shows_the_question_the_rules_leave_to_the_model(tmp_path, capsys):
    from engine.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"title": "Acme jeans", "attributes": {"Length": "10 in", "Fit": "baggy"}}) + "\n")
    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.model_dump_json())
    assert main(["render", str(src), "--task", "normalize", "--spec", str(spec), "--format", "messages",
                 "--schema"]) == 0
    out = capsys.readouterr().out
    assert "Value: baggy" in out and "Slim | Regular" in out and "Length" not in out


def _wdc_pair(tmp_path, offers):
    """WDC-PAVE-shaped raw and normalized gold: ``offers`` = [(title, {attr: (raw, normalized) or None})]."""
    raw, norm = tmp_path / "train.jsonl", tmp_path / "train_normalized.jsonl"
    for path, k in ((raw, 0), (norm, 1)):
        path.write_text("".join(json.dumps({"id": i, "category": "C", "input_title": title, "target_scores": {
            a: {v[k]: {"pid": [0]}} if v else {"n/a": 1} for a, v in gold.items()}}) + "\n"
            for i, (title, gold) in enumerate(offers)))
    return raw, norm


def test_eval_extract_then_normalize_scores_what_was_extracted_against_the_normalized_gold(tmp_path, scripted):
    """End to end, as a catalogue runs it: the extracted raw values go through the rules, and the normalized gold
    is the reference; a failed extraction is a failure, a product where nothing was found predicts nothing."""
    from eval.datasets import read_extraction_gold, schema_from_gold
    from eval.harness import evaluate_extraction
    from eval.report import extraction_markdown
    from prompts.tasks.extract import Extract

    raw, norm = _wdc_pair(tmp_path, [
        ("acme ruler 10 in", {"Length": ("10 in", "25.4"), "Brand": ("acme", "ACME"), "Color": None}),
        ("zed tape 2 in", {"Length": ("2 in", "5.1"), "Brand": ("zed", "ZED"), "Color": None}),
        ("plain thing", {"Length": None, "Brand": ("plain", "PLAIN"), "Color": None}),
    ])
    answers = {"acme ruler 10 in": '{"Length":"10 in","Brand":"acme","Color":"acme"}',
               "zed tape 2 in": "not json", "plain thing": '{"Length":null,"Brand":null,"Color":null}'}

    def script(request, _call):
        if "Value: acme" in request.prompt[-1]["content"]:  # the colour the rules leave to the model
            return "Black"
        return next(a for t, a in answers.items() if t in json.dumps(request.prompt))

    task = Extract(attribute_schema=schema_from_gold(read_extraction_gold(raw)))
    report = evaluate_extraction(scripted(script), task, raw, normalize=Normalize(SPEC), normalized_gold=norm,
                                 progress=False)
    assert report["summary"]["tp"] == 2  # the extraction itself: raw values against raw gold
    e2e = report["end_to_end"]
    s = e2e["summary"]
    assert (s["tp"], s["fp"], s["fn"], s["failures"]) == (2, 1, 3, 1)  # Color n/a -> FP; zed failed; plain missed
    assert {o["operation"]: o["slots"] for o in e2e["operations"]} == {"unit conversion": 3, "string wrangling": 3,
                                                                      "generalisation": 3}
    wrong = {(m["title"], m["attribute"], m["extracted"], m["predicted"])
             for m in e2e["mistakes"]}
    assert wrong == {("acme ruler 10 in", "Color", "acme", "Black"), ("zed tape 2 in", "Length", "<failed>", "<failed>"),
                     ("zed tape 2 in", "Brand", "<failed>", "<failed>"), ("plain thing", "Brand", None, None)}
    assert "end to end" in extraction_markdown(report)


def test_eval_extract_spec_needs_the_normalized_gold_beside_the_data(tmp_path, capsys):
    from engine.cli import main

    raw, norm = _wdc_pair(tmp_path, [("acme ruler 10 in", {"Brand": ("acme", "ACME")})])
    norm.unlink()
    spec = tmp_path / "spec.json"
    spec.write_text(SPEC.model_dump_json())
    assert main(["eval", "extract", "--data", str(raw), "--spec", str(spec), "--model", str(tmp_path / "none")]) != 0
    assert "train_normalized.jsonl does not exist" in capsys.readouterr().err


def test_extract_with_a_spec_writes_the_normalized_values_beside_the_found_ones(tmp_path, scripted, monkeypatch):
    """`facet extract --spec`: one command from product text to canonical values; each record keeps what was
    found (the spans) and adds what it normalizes to, with the audit trail; a bad line is still an error record."""
    import engine.cli as cli

    def script(request, _call):
        text = json.dumps(request.prompt)
        if "Value: navy" in text:
            return "Blue"
        if "Attribute name:" in text:  # names are the ones the extractor was asked for: never remapped
            return "Color"
        return ('{"Length":"10 in","Color":"navy","Model":"R2"}' if "Acme" in text
                else '{"Length":null,"Color":null,"Model":null}')

    import engine.cli.tasks

    monkeypatch.setattr(engine.cli.tasks, "backend_for", lambda args, task="extract": scripted(script))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "title": "Acme navy ruler R2 10 in"}) + "\n" + "not json\n"
                   + json.dumps({"id": "b", "title": "Plain thing"}) + "\n")
    attrs, spec, out = tmp_path / "attrs.json", tmp_path / "spec.json", tmp_path / "out.jsonl"
    attrs.write_text(json.dumps({"*": ["Length", "Color", "Model"]}))
    spec.write_text(SPEC.model_dump_json())
    assert cli.main(["extract", str(src), "--attributes", str(attrs), "--spec", str(spec), "-o", str(out), "-q"]) == 0
    recs = {r.get("id") or r.get("line"): r for r in map(json.loads, out.read_text().splitlines())}
    a = recs["a"]
    assert {x["name"]: x["value"] for x in a["attributes"]} == {"Length": "10 in", "Color": "navy", "Model": "R2"}
    assert a["normalized"]["attributes"] == {"Length": "25.4", "Color": "Blue", "Model": "R2"}  # no rule: as found
    assert {c["by"] for c in a["normalized"]["changes"] if c["field"] == "value"} >= {"rule:unit"}
    assert recs["b"]["ok"] and recs["b"]["normalized"] is None  # nothing found, nothing to normalize
    assert [r["ok"] for r in recs.values()].count(False) == 1
