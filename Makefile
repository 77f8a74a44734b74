# make train / make test: set up .venv when needed (pip install -e ".[dev]"), then run.
# Extra arguments pass through: make train ARGS="experiment=smoke"   make test ARGS="-k block"
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# Use the read-only CIFAR-10 image folder of this workplace when it is there and $CIFAR10_ROOT is not set. The data/
# fallback is conf/data/cifar10.yaml's alone (an exported empty CIFAR10_ROOT would override it, hence the ifneq).
ifneq ($(wildcard ../shared/data/cifar10/train),)
export CIFAR10_ROOT ?= $(abspath ../shared/data/cifar10)
endif

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
