"""The README's Python API examples print what the code prints (doctest over README.md, real model: slow)."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_has_examples_to_run():
    text = (ROOT / "README.md").read_text()
    assert text.count(">>> ") >= 8  # the API section is written as doctest examples, so it can be checked


@pytest.mark.slow
@pytest.mark.skipif(__import__("schemas.taxonomy").taxonomy.shopify_folder(required=False) is None,
                    reason="the examples classify into Shopify's taxonomy (shared/data/shopify-taxonomy), absent here")
def test_readme_python_examples_print_what_they_show(default_model_dir, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples read examples/*.json as a user in a fresh clone would
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8
    assert result.failed == 0, f"{result.failed} README example(s) print something else (see the output above)"
