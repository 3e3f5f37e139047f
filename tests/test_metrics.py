"""The extraction metric of shared/data/README.md, case by case."""

from __future__ import annotations

import pytest

from eval.metrics import score_extraction, slot_outcome


@pytest.mark.parametrize(("gold", "pred", "tp", "fp", "fn"), [
    (None, None, 0, 0, 0),            # n/a, nothing predicted: ignored
    (None, "n/a", 0, 0, 0),
    (None, "Red", 0, 1, 0),           # n/a but a value: FP
    ({"Red"}, None, 0, 0, 1),         # value, nothing: FN
    ({"Red"}, "Red", 1, 0, 0),
    ({"Red"}, " Red ", 1, 0, 0),      # whitespace stripped
    ({"Red"}, "red", 0, 1, 1),        # case-sensitive
    ({"Red"}, "Blue", 0, 1, 1),       # wrong: FP and FN
    ({"16 oz", "16oz"}, "16oz", 1, 0, 0),  # any of several golds
])
def test_slot_outcomes(gold, pred, tp, fp, fn):
    c = slot_outcome(gold, pred)
    assert (c.tp, c.fp, c.fn) == (tp, fp, fn)


def test_failures_predict_nothing_and_are_counted():
    golds = [{"Brand": {"Acme"}, "Color": None}, {"Brand": {"Zed"}}]
    preds = [{"Brand": "Acme", "Color": "Red", "Extra": "ignored"}, None]
    s = score_extraction(golds, preds, ["Mugs", "Mugs"])
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (1, 1, 1)
    assert s.failures == 1
    assert s.micro.precision == pytest.approx(0.5) and s.micro.recall == pytest.approx(0.5)
    assert s.micro.f1 == pytest.approx(0.5)
    assert set(s.by_slot) == {("Mugs", "Brand"), ("Mugs", "Color")}
