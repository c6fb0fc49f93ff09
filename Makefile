# SarcoFed: `make demo` (federated simulation of synthetic hospitals) and `make test` (the suite).
# Both create the virtual environment in .venv on first use. Nothing here needs a GPU or the internet
# beyond the package index.
#
# TORCH_SPEC picks the torch build installed before the project: the default is the CPU build that these
# machines take from local disk in seconds. A GPU site installs CUDA torch instead, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PRESET ?= demo
# Two pytest-xdist workers, one test file each at a time (slow files first: tests/conftest.py).
TEST_WORKERS ?= 2

# Hospital networks: nothing leaves unless we say so. Runs use this environment, not a fresh one per run.
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_HOME := $(CURDIR)/.flwr_home

.PHONY: install demo compare paper-check test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SarcoFed needs Python >= 3.11; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(PY) -m simulations.demo --preset $(PRESET)

# The demo plus centralised and local-only baselines with the same compute budget (about 3x as long).
compare: install
	$(PY) -m simulations.demo --preset $(PRESET) --baselines

# The paper's comparisons on one synthetic site: SSL vs scratch with 20 labels, image classifiers vs
# the quantitative verdict (PRESET=tiny: about a minute; PRESET=demo: tens of minutes on 2 cores).
paper-check: install
	$(PY) -m simulations.paper_check --preset $(PRESET)

# Lint, format and type checks first (ruff, mypy: configured in pyproject.toml), then the suite.
test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

bench: install
	$(PY) -m simulations.bench

clean:
	rm -rf .cache runs .flwr_home .pytest_cache
