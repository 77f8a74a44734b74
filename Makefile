# make train / make test: set up .venv when needed (pip install -e ".[dev]"), then run.
# Extra arguments pass through: make train ARGS="experiment=smoke"   make test ARGS="-k block"
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# Data: data.root is $CIFAR10_ROOT when set, else data/ (conf/data/cifar10.yaml), where the first run downloads it.

.PHONY: install train test lint bench report

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/python -m cifar_lit.train $(ARGS)

test: install
	$(VENV)/bin/python -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check cifar_lit tests
	$(VENV)/bin/ruff format --check cifar_lit tests

bench: install
	$(VENV)/bin/python -m cifar_lit.bench $(ARGS)
