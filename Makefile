# nmt — the Makefile is the user interface. `make help` lists the targets.
# Hydra overrides go through ARGS, e.g. make train ARGS="model.cell=lstm data.src=de data.tgt=en"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ARGS   ?=
# Data-parallel training (make train): NPROC processes per machine under torchrun; on several
# machines NNODES of them, each run with MASTER=host:port of the node all of them reach.
NPROC  ?=
NNODES ?= 1
MASTER ?=
# make test: pytest workers (pytest-xdist); auto = one per core, 0 = in-process.
TEST_JOBS ?= auto
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install data spm train translate eval tune-search bench ablate test lint format clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  overrides: make <target> ARGS=\"data.src=de data.tgt=en ...\"; another torch: make install TORCH=torch==2.15.0"

# torch goes first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# Install output goes to stderr so `make translate` keeps stdout for translations.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) >&2
	@echo "installing $(TORCH) and nmt into $(VENV)" >&2
	@$(BIN)/pip install --quiet "$(TORCH)" >&2
	@$(BIN)/pip install --quiet -e ".[dev,joblib,slurm]" >&2
	@touch $@

install: $(STAMP) ## create .venv and install nmt (editable, with dev extras)

data: $(STAMP) ## prepare the parallel corpus (datasets format, cleaned train split)
	$(BIN)/nmt-data $(ARGS)

spm: $(STAMP) ## train SentencePiece on the training split and encode every split
	$(BIN)/nmt-spm $(ARGS)

translate: $(STAMP) ## translate stdin to stdout: ARGS="run_dir=runs/X" (input=FILE output=FILE)
	@$(BIN)/nmt-translate $(ARGS)

eval: $(STAMP) ## BLEU/chrF/TER of a split: ARGS="run_dir=runs/X split=test_2016_flickr" (or hyps=[A,B])
	@$(BIN)/nmt-eval $(ARGS)

tune-search: $(STAMP) ## beam size and length penalty chosen on validation: ARGS="run_dir=runs/X"
	$(BIN)/nmt-tune-search $(ARGS)

bench: $(STAMP) ## training and decoding speed per cell on the reference model (name: value + JSON)
	$(BIN)/python scripts/bench.py $(ARGS)

# The quick preset unless ARGS names another experiment.
ablate: $(STAMP) ## cell ablation sweep + report in runs/<preset> (ARGS="experiment=ablation_converged")
	$(BIN)/nmt-ablate $(if $(findstring experiment=,$(ARGS)),,experiment=ablation_quick) $(ARGS)

test: $(STAMP) ## run the test suite (offline)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup --durations=10 $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check nmt tests scripts
	$(BIN)/ruff format --check nmt tests scripts

format: $(STAMP) ## ruff autofix and format
	$(BIN)/ruff check --fix nmt tests scripts
	$(BIN)/ruff format nmt tests scripts

clean: ## remove caches and build leftovers (keeps runs/ and .venv)
	rm -rf .cache .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# NPROC=N: N data-parallel processes under torchrun (gloo on CPU, nccl on CUDA) with one
# timestamp for the run directory they share; MASTER=host:port: torchrun's c10d rendezvous of
# NNODES machines there instead of one standalone machine (name run_dir on a shared disk).
RENDEZVOUS = $(if $(MASTER),--nnodes=$(NNODES) --rdzv-backend=c10d --rdzv-endpoint=$(MASTER) \
	--rdzv-id=nmt,--standalone)
train: $(STAMP) ## train a model (data + spm stages first, cached); NPROC=2: data-parallel ranks
ifeq ($(strip $(NPROC)),)
	$(BIN)/nmt-train $(ARGS)
else
	NMT_RUN_STAMP=$$(date +%Y-%m-%d_%H-%M-%S) $(BIN)/torchrun $(RENDEZVOUS) \
		--nproc-per-node=$(NPROC) $(BIN)/nmt-train $(ARGS)
endif
