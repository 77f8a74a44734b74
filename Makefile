# make train / make test: set up .venv when needed, then run. train and bench install the project alone
# (pip install -e .); test and lint add the dev extra (pytest, ruff and every optional feature).
# Extra arguments pass through: make train ARGS="experiment=smoke"   make test ARGS="-k block"
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# Data: data.root is $CIFAR10_ROOT when set, else data/ (conf/data/cifar10.yaml), where the first run downloads it.

.PHONY: install install-dev train test lint bench

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

train: install
	$(VENV)/bin/python -m cifar_lit.train $(ARGS)

# -n auto: one pytest worker per core (pytest-xdist); loadgroup keeps the tests of the one-node SLURM cluster on one
# worker (tests/conftest.py). TEST_WORKERS=0 runs the suite in this process, one test after another.
TEST_WORKERS ?= auto
test: install-dev
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

lint: install-dev
	$(VENV)/bin/ruff check cifar_lit hydra_plugins scripts tests
	$(VENV)/bin/ruff format --check cifar_lit hydra_plugins scripts tests

bench: install
	$(VENV)/bin/python -m cifar_lit.bench $(ARGS)
