# Two commands on a fresh machine:  `make book` builds the website, `make test` runs the tests.
# Each creates the virtual environment from requirements.txt first (once).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= quick
# Datasets: DATA_DIR if set, else ../shared/datasets when it exists (this project's build machines), else data/.
DATA_DIR ?= $(firstword $(wildcard $(CURDIR)/../shared/datasets) $(CURDIR)/data)
export DATA_DIR

.PHONY: book test execute browser-test benchmark clean-cache help

help:
	@echo "make book          build the website into _build/html (executes chapters; quick profile where no paper results)"
	@echo "make test          run the unit and chapter tests (no browser)"
	@echo "make execute       execute every chapter with papermill at PROFILE=$(PROFILE) into _build/executed/"
	@echo "make browser-test  open every built page in headless Chromium (needs: apt-get install chromium)"
	@echo "make benchmark     trainer throughput vs a plain DataLoader loop"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (book)" >/dev/null
	touch $@

_vendor/VERSIONS: tools/vendor_js.sh
	./tools/vendor_js.sh

book: $(STAMP) _vendor/VERSIONS
	$(BIN)/jupyter-book build . -W --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest -m "not browser"

execute: $(STAMP)
	$(BIN)/python -m lib.reproduce --profile $(PROFILE)

browser-test: $(STAMP) _vendor/VERSIONS
	$(BIN)/python -m pytest -m browser tests/test_browser.py

benchmark: $(STAMP)
	$(BIN)/python tools/benchmark_trainer.py

clean-cache:
	rm -rf .cache/results _build
