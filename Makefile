# Set-up and entry points. `make demo` and `make test` install everything they need first
# (into .venv/, idempotent: a stamp file records a finished install).

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

# Run the main job on the embedded demo capture.
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/scene.ply

# Run the test suite (CPU only; the whole suite takes a few minutes on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The suite without the tests marked slow (end-to-end workflow runs, training runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow"

# Static checks that CI runs before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean:
	rm -rf work results .snakemake
