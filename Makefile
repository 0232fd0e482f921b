# The README's two commands: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.metsynth-installed
DEV_STAMP := $(VENV)/.metsynth-dev-installed
PIP    := $(PY) -m pip install -qq --constraint constraints.txt

# nnU-Net lives in its own environment: its dependencies pull a CUDA torchvision that breaks
# Lightning's imports. Only the nnU-Net export's integrity test uses it.
NNUNET_VENV  := .venv-nnunet
NNUNET_STAMP := $(NNUNET_VENV)/.installed

.PHONY: setup dev nnunet-env demo test lint bench clean

setup: $(STAMP)

dev: $(DEV_STAMP)

nnunet-env: $(NNUNET_STAMP)

$(NNUNET_STAMP): constraints.txt
	test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install -qq --constraint constraints.txt torch==2.13.0 nnunetv2==2.8.1
	touch $(NNUNET_STAMP)

# The demo needs metsynth and its dependencies only; the tests, ruff and the benchmarks add the
# dev extras (pytest, hypothesis, Dask, ruff: about 15 s more on a fresh machine).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP) -e ".[dev]"
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/metsynth demo --out runs/demo

test: $(DEV_STAMP) $(NNUNET_STAMP)
	METSYNTH_NNUNET_PYTHON=$(CURDIR)/$(NNUNET_VENV)/bin/python $(PY) -m pytest -q

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(DEV_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(NNUNET_VENV) runs
