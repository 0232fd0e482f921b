# The README's two commands: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.metsynth-installed
PIP    := $(PY) -m pip install -qq --constraint constraints.txt

# nnU-Net lives in its own environment: its dependencies pull a CUDA torchvision that breaks
# Lightning's imports. Only the nnU-Net export's integrity test uses it.
NNUNET_VENV  := .venv-nnunet
NNUNET_STAMP := $(NNUNET_VENV)/.installed

.PHONY: setup nnunet-env demo test lint bench clean

setup: $(STAMP)

nnunet-env: $(NNUNET_STAMP)

$(NNUNET_STAMP): constraints.txt
	test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install -qq --constraint constraints.txt torch==2.13.0 nnunetv2==2.8.1
	touch $(NNUNET_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/metsynth demo --out runs/demo

test: $(STAMP) $(NNUNET_STAMP)
	METSYNTH_NNUNET_PYTHON=$(CURDIR)/$(NNUNET_VENV)/bin/python $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(NNUNET_VENV) runs
