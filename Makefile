# Setup, demo and tests. `make demo` and `make test` set everything up first (CPU-only, offline models).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

# Exactly the lock files, each package with --no-deps (so nothing unpinned comes in), then the project
# itself; `envlock.py sync` removes what no lock file pins and fails if a locked package misses a dependency.
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml Makefile tools/envlock.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-deps $$(grep -E '^pip==' requirements.lock)
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python tools/envlock.py sync
	touch $(STAMP)

# Train the tiny LDLM on the built-in Shakespeare corpus, sample, print samples and metrics.
# (--resume: running it again continues or reuses runs/demo instead of refusing to overwrite it)
# `make demo DEMO=tiny-causal`: configs/tiny-causal.yaml (a causal token decoder, not the paper's model)
# into runs/demo-tiny-causal
DEMO ?= tiny
DEMO_RUN := $(if $(filter tiny,$(DEMO)),runs/demo,runs/demo-$(DEMO))
demo: setup
	$(BIN)/ldlm train --config configs/$(DEMO).yaml --out $(DEMO_RUN) --resume
	$(BIN)/ldlm sample --ckpt $(DEMO_RUN) --num 256 --steps 25 --out $(DEMO_RUN)/samples.jsonl --show 12
	$(BIN)/ldlm eval $(DEMO_RUN)/samples.jsonl --out $(DEMO_RUN)/eval.json

test: setup
	$(BIN)/python -m pytest -q -x

clean:
	rm -rf runs cache
