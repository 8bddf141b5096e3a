# nmt — the Makefile is the user interface. `make help` lists the targets.
# Hydra overrides go through ARGS, e.g. make train ARGS="model.cell=lstm data.src=de data.tgt=en"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ARGS   ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install data spm train test lint format clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  overrides: make <target> ARGS=\"data.src=de data.tgt=en ...\"; another torch: make install TORCH=torch==2.15.0"

# torch goes first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP) ## create .venv and install nmt (editable, with dev extras)

data: $(STAMP) ## prepare the parallel corpus (datasets format, cleaned train split)
	$(BIN)/nmt-data $(ARGS)

spm: $(STAMP) ## train SentencePiece on the training split and encode every split
	$(BIN)/nmt-spm $(ARGS)

test: $(STAMP) ## run the test suite (offline)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check nmt tests scripts
	$(BIN)/ruff format --check nmt tests scripts

format: $(STAMP) ## ruff autofix and format
	$(BIN)/ruff check --fix nmt tests scripts
	$(BIN)/ruff format nmt tests scripts

clean: ## remove caches and build leftovers (keeps runs/ and .venv)
	rm -rf .cache .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

train: $(STAMP) ## train a model (data + spm stages first, cached); default en->de gru+bahdanau
	$(BIN)/nmt-train $(ARGS)
