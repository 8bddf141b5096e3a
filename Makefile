# nmt — shortcuts for the nmt-* commands (plain Hydra apps). `make help` lists the targets.
# Hydra overrides are make's command-line variables, e.g. make train model=lstm data.src=de
# data.tgt=en; ARGS="..." carries what make cannot parse (~key, +key=value, --cfg job).

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
# make results: the finished run directories whose figures go into docs/results.md.
RUNS ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Every variable set on make's command line that is not one of the Makefile's own becomes a Hydra
# override, single-quoted for the shell and unexpanded (so ${...} interpolations reach Hydra as
# written); sorted, so the command is the same however the line was ordered. ARGS come last.
OWN_VARS  := PYTHON VENV TORCH ARGS NPROC NNODES MASTER TEST_JOBS RUNS
quote      = '$(subst ','\'',$(1))'
CLI_VARS   = $(sort $(filter-out $(OWN_VARS),$(foreach v,$(.VARIABLES),$(if $(filter command \
	line,$(origin $(v))),$(v)))))
OVERRIDES  = $(strip $(foreach v,$(CLI_VARS),$(call quote,$(v)=$(value $(v)))) $(ARGS))

.DEFAULT_GOAL := help
.PHONY: help install data spm train translate eval tune-search export serve bench ablate results browser test lint format clean

# Target names in colour on a terminal only: a pipe or a file gets plain text.
help: ## list the targets
	@if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; else on=; off=; fi; \
		awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / \
		{printf "  %s%-10s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)
	@echo "  overrides: make <target> data.src=de data.tgt=en ... (or ARGS=\"...\"); another torch: make install TORCH=torch==2.15.0"

# torch goes first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# Install output goes to stderr so `make translate` keeps stdout for translations.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) >&2
	@echo "installing $(TORCH) and nmt into $(VENV)" >&2
	@$(BIN)/pip install --quiet "$(TORCH)" >&2
	@$(BIN)/pip install --quiet -e ".[dev,report,tb,launchers,serve,onnx]" >&2
	@touch $@

install: $(STAMP) ## create .venv and install nmt (editable, with every extra)

data: $(STAMP) ## prepare the parallel corpus (datasets format, cleaned train split)
	$(BIN)/nmt-data $(OVERRIDES)

spm: $(STAMP) ## train SentencePiece on the training split and encode every split
	$(BIN)/nmt-spm $(OVERRIDES)

translate: $(STAMP) ## translate stdin to stdout: run_dir=runs/X or model=FILE (input=FILE output=FILE)
	@$(BIN)/nmt-translate $(OVERRIDES)

eval: $(STAMP) ## BLEU/chrF/TER of a split: run_dir=runs/X split=test_2016_flickr (or hyps=[A,B])
	@$(BIN)/nmt-eval $(OVERRIDES)

tune-search: $(STAMP) ## beam size and length penalty chosen on validation: run_dir=runs/X
	$(BIN)/nmt-tune-search $(OVERRIDES)

export: $(STAMP) ## a run's model in one file: run_dir=runs/X out=model.nmt (checkpoint=avg-best-5)
	$(BIN)/nmt-export $(OVERRIDES)

serve: $(STAMP) ## translation service on localhost:8000: model=model.nmt (or run_dir=runs/X) port=8000
	$(BIN)/nmt-serve $(OVERRIDES)

bench: $(STAMP) ## training and decoding speed per cell on the reference model (name: value + JSON)
	$(BIN)/python scripts/bench.py $(ARGS)

# The quick preset unless the overrides name another experiment.
ablate: $(STAMP) ## cell ablation sweep + report in runs/<preset> (experiment=ablation_converged)
	$(BIN)/nmt-ablate $(if $(findstring experiment=,$(OVERRIDES)),,experiment=ablation_quick) $(OVERRIDES)

results: $(STAMP) ## docs/results.md and the README's table from artifacts: RUNS="runs/X runs/Y"
	$(BIN)/python scripts/results.py $(RUNS) $(ARGS)

# The page's browser test drives Chromium from the system's packages through its chromedriver.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser: ## Chromium and chromedriver from the system's packages (apt), for the page's test
	@command -v chromedriver >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		echo "installing chromium and chromium-driver (apt)" >&2 && \
		{ $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver >&2 || \
		{ $(SUDO) apt-get update -q >&2 && \
		$(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver >&2; }; }; } || \
		{ echo "make browser: install Chromium and its chromedriver from your system's packages" >&2; exit 1; }

# The package compiled first: where the environment forbids writing bytecode
# (PYTHONDONTWRITEBYTECODE), each of the hundreds of commands the suite starts would compile it.
test: $(STAMP) browser ## run the test suite (offline)
	@$(BIN)/python -m compileall -q nmt >&2
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
	@$(BIN)/nmt-train $(OVERRIDES)
else
	NMT_RUN_STAMP=$$(date +%Y-%m-%d_%H-%M-%S) $(BIN)/torchrun $(RENDEZVOUS) \
		--nproc-per-node=$(NPROC) $(BIN)/nmt-train $(OVERRIDES)
endif
