# Two commands on a fresh machine:  `make book` builds the website, `make test` runs the tests.
# Each creates the virtual environment from requirements.txt first (once).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# TORCH=cuda (default): the pinned torch/torchvision from PyPI, a CUDA build (venv ≈ 6.2 GB).
# TORCH=cpu: the same versions, PyTorch's CPU build from download.pytorch.org (venv ≈ 1 GB; for laptops). The rest of
# requirements.txt comes from PyPI either way. One venv holds one build: switching needs `rm -rf $(VENV)` first.
TORCH  ?= cuda
ifeq ($(TORCH),cuda)
STAMP  := $(VENV)/.installed
OTHER_STAMP := $(VENV)/.installed-cpu
else ifeq ($(TORCH),cpu)
STAMP  := $(VENV)/.installed-cpu
OTHER_STAMP := $(VENV)/.installed
TORCH_INDEX := https://download.pytorch.org/whl/cpu
else
$(error TORCH must be cuda or cpu, not '$(TORCH)')
endif
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
	@echo "TORCH=cpu          with book/test: install PyTorch's CPU build (≈ 1 GB venv) instead of the CUDA one (≈ 6.2 GB)"

$(STAMP): requirements.txt pyproject.toml
	@if [ -e $(OTHER_STAMP) ]; then echo "$(VENV) holds the other torch build than TORCH=$(TORCH): rm -rf $(VENV) first"; exit 2; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(TORCH),cpu)
	@# the torch/torchvision pins of requirements.txt, from PyTorch's CPU index; "==2.14.1" then also accepts
	@# 2.14.1+cpu, so the next line leaves them in place and installs the rest (torch's own deps too) from PyPI
	grep -E '^(torch|torchvision)==' requirements.txt > $(VENV)/torch-cpu.txt
	$(BIN)/python -m pip install --progress-bar on --no-deps --index-url $(TORCH_INDEX) -r $(VENV)/torch-cpu.txt
endif
	@# no --quiet: the first install downloads GBs (the CUDA build of torch), and pip's progress shows it
	$(BIN)/python -m pip install --progress-bar on -r requirements.txt
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
