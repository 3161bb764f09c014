# Two commands on a fresh machine: `make demo` runs the mesh, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean native

# The install compiles the proxy's request path with mypyc (setup.py). The extensions sit next to
# their sources and shadow them, so NATIVE_STAMP rebuilds them whenever a proxy or telemetry source
# (or bus/config/hosts.py, the one compiled module outside them) is newer. With MESHBUS_PURE_PYTHON=1
# nothing is compiled and `make native` removes the extensions.
NATIVE_STAMP := build/native$(if $(filter-out 0,$(MESHBUS_PURE_PYTHON)),-pure,).stamp
NATIVE_DIRS  := proxy telemetry bus/config
NATIVE_DEPS  := setup.py $(shell find proxy telemetry -name '*.py') bus/config/hosts.py

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)
	mkdir -p build && touch $(NATIVE_STAMP)

$(NATIVE_STAMP): $(STAMP) $(NATIVE_DEPS)
	find $(NATIVE_DIRS) -name '*.so' -delete
	rm -f build/native*.stamp
	$(BIN)/python setup.py --quiet build_ext --inplace
	# an unchanged module's shim is copied with its old time: mark every extension as of this build
	find $(NATIVE_DIRS) -name '*.so' -exec touch {} +
	touch $(NATIVE_STAMP)

native: $(NATIVE_STAMP)

demo: $(NATIVE_STAMP)
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

pytest: $(NATIVE_STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(NATIVE_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy-src .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find $(NATIVE_DIRS) -name '*.so' -delete
