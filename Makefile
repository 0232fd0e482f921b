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

# pip byte-compiles what it installs on one core, about half of a fresh install's time (37 of 72 s
# here). Installed with --no-compile instead, torch is compiled on one core while pip installs the
# rest on the other, then the rest on every core: the same 12556 .pyc files, 10-17 s sooner on 2
# cores (benchmarks/RESULTS.md, "Setup"). A file that does not compile under this Python (torch
# ships a few Python 3.12-only test helpers) is skipped, as pip skips it.
SITE    = $$($(1) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
COMPILE = $(1) -m compileall -qq

$(NNUNET_STAMP): constraints.txt
	test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install -qq --no-compile --constraint constraints.txt torch==2.13.0 nnunetv2==2.8.1
	$(call COMPILE,$(NNUNET_VENV)/bin/python) -j 0 "$(call SITE,$(NNUNET_VENV)/bin/python)" || true
	touch $(NNUNET_STAMP)

# The demo needs metsynth and its dependencies only; the tests, ruff and the benchmarks add the
# dev extras (pytest, hypothesis, Dask, ruff: about 15 s more on a fresh machine).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --no-compile torch==2.13.0
	$(call COMPILE,$(PY)) "$(call SITE,$(PY))/torch" & $(PIP) --no-compile -e .; status=$$?; wait; exit $$status
	$(call COMPILE,$(PY)) -j 0 "$(call SITE,$(PY))" || true
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP) --no-compile -e ".[dev]"
	$(call COMPILE,$(PY)) -j 0 "$(call SITE,$(PY))" || true
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
