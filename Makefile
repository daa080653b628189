# cnngraph: `make demo` runs the main job, `make test` the tests, on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cnngraph-installed
TORCH_STAMP := $(VENV)/.cnngraph-torch-installed

.PHONY: install test test-full demo bench bench-quick lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The torch extra (PyTorch front end, about 5 GB with PyPI's CUDA wheels) only for test-full.
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,torch]'
	touch $(TORCH_STAMP)

install: $(STAMP)

# The tests start the managed Neo4j server themselves (tests/neo4j_plugin.py) unless NEO4J_URI
# is set, and stop it afterwards; a missing server fails the run. scripts/test-deps.sh installs
# Chromium (for the Neo4j Browser test), Java and Maven when missing (apt-get, as root).
test: $(STAMP)
	bash scripts/test-deps.sh
	$(PY) -m pytest -q -m "not slow"

test-full: $(STAMP) $(TORCH_STAMP)
	bash scripts/test-deps.sh
	$(PY) -m pytest -q

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	$(PY) benchmarks/extract.py

bench-quick: $(STAMP)
	$(PY) benchmarks/extract.py --quick

lint: $(STAMP)
	$(PY) -m ruff check pipeline tests benchmarks

clean:
	rm -rf out .pytest_cache .ruff_cache
