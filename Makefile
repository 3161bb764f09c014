# Two commands on a fresh machine: `make demo` runs the mesh, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meshctl up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' editable finder for the package-dir mapping,
# so it reads the same folders through a tree of symlinks named as installed.
typecheck: $(STAMP)
	rm -rf .mypy-src && mkdir -p .mypy-src/meshbus
	for p in bus proxy plugins control telemetry; do ln -s ../../$$p .mypy-src/meshbus/$$p; done
	cd .mypy-src && MYPYPATH=. ../$(BIN)/mypy --config-file ../pyproject.toml -p meshbus

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy-src .pytest_cache .mypy_cache .ruff_cache build *.egg-info
