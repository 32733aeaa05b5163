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

# Run the test suite (CPU only) on 2 pytest-xdist workers, one test file per worker at a time
# (tests/conftest.py starts the files that mostly wait first).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20 tests

# The suite without the tests marked slow (end-to-end workflow runs, training runs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests -m "not slow"

# Static checks that CI runs before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean:
	rm -rf work results .snakemake
