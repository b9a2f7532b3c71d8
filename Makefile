# Set-up and entry points. Every target creates .venv and installs the project into it when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
SYSTEM_PYTHON ?= python3
# Offline machines read public data from a local mirror laid out as <owner>/<repo>/<commit>/<path>.
MIRROR_DIR := $(abspath $(wildcard ../shared/data/mirror))
ifneq ($(MIRROR_DIR),)
export PARTAGES_MIRROR ?= $(MIRROR_DIR)
endif
CONFIG ?= configs/default.yaml

.PHONY: install test run docs lab export clean-nbs bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

test: install
	PATH=$(abspath $(VENV))/bin:$$PATH bash scripts/test.sh

run: install
	$(VENV)/bin/partages run --config $(CONFIG)

docs: install
	$(PY) scripts/build_docs.py

lab: install
	$(PY) -m ipykernel install --sys-prefix --name partages --display-name "partages (.venv)"
	$(VENV)/bin/jupyter lab --notebook-dir=.

export: install
	$(VENV)/bin/nbdev-export

clean-nbs: install
	$(VENV)/bin/nbdev-clean

bench: install
	PATH=$(abspath $(VENV))/bin:$$PATH bash benchmarks/run_all.sh
