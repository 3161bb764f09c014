# Two commands on a fresh machine: `make demo` runs the mesh, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PARTS  := bus proxy plugins control telemetry

.PHONY: demo test lint typecheck pytest pytest-pure pure-tree bench clean native smuggling fuzz cluster-test chaos soak

# The install compiles the proxy's request path with mypyc (setup.py). The extensions sit next to
# their sources and shadow them, so NATIVE_STAMP rebuilds them whenever a proxy or telemetry source
# (or bus/config/hosts.py, bus/inline.py, bus/direct.py, bus/read_end.py, bus/config/authz/, plugins/http.py and plugins/remote/, the compiled modules outside them)
# is newer. With MESHBUS_PURE_PYTHON=1 nothing is compiled and `make native` removes the extensions.
NATIVE_STAMP := build/native$(if $(filter-out 0,$(MESHBUS_PURE_PYTHON)),-pure,).stamp
NATIVE_DIRS  := proxy telemetry bus plugins
NATIVE_DEPS  := setup.py $(shell find proxy telemetry -name '*.py') bus/config/hosts.py bus/inline.py bus/direct.py bus/read_end.py $(wildcard bus/config/authz/*.py) plugins/http.py $(wildcard plugins/remote/*.py)

# The venv gets meshbus uncompiled (editable) and the build tools; compiling is NATIVE_STAMP's job,
# so `make test` can run the pure-Python suite while the compiler works.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=77" wheel
	MESHBUS_PURE_PYTHON=1 $(BIN)/pip install --quiet --no-build-isolation -e ".[dev]"
	touch $(STAMP)

$(NATIVE_STAMP): $(STAMP) $(NATIVE_DEPS)
	find $(NATIVE_DIRS) -name '*.so' -delete
	mkdir -p build && rm -f build/native*.stamp
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
	for p in $(PARTS); do ln -s ../../$$p .mypy-src/meshbus/$$p; done
	cd .mypy-src && MYPYPATH=. ../$(BIN)/mypy --config-file ../pyproject.toml -p meshbus

# Users get meshbus compiled (the default install) or pure Python (MESHBUS_PURE_PYTHON=1), so
# `make test` runs the suite against both, side by side: `pytest` against the extensions next to
# the sources, `pytest-pure` against the sources themselves, imported through PURE_TREE (links to
# the .py files only, first on PYTHONPATH, also for the processes the tests start), where no
# extension can shadow them. MESHBUS_TEST_BUILD makes each run check that it imports the build it
# names (tests/conftest.py); the pure run runs only the tests of the compiled modules' behaviour
# (tests/support/build.py says which). ruff and mypy run beside them; each job's output is printed
# as a whole when it ends.
PURE_TREE := build/pure-src

pytest: $(NATIVE_STAMP)
	MESHBUS_TEST_BUILD=$(if $(filter-out 0,$(MESHBUS_PURE_PYTHON)),pure,native) $(BIN)/pytest -q

pure-tree:
	rm -rf $(PURE_TREE) && mkdir -p $(PURE_TREE)/meshbus
	for p in $(PARTS); do \
	  (cd $$p && find . -name '*.py' -not -path '*/__pycache__/*') | while read -r f; do \
	    mkdir -p "$(PURE_TREE)/meshbus/$$p/$$(dirname "$$f")" && ln -s "$(CURDIR)/$$p/$$f" "$(PURE_TREE)/meshbus/$$p/$$f"; \
	  done; \
	done

pytest-pure: $(STAMP) pure-tree
	MESHBUS_TEST_BUILD=pure PYTHONPATH=$(CURDIR)/$(PURE_TREE) $(BIN)/pytest -q -p no:cacheprovider

test:
	$(MAKE) --no-print-directory -j3 --output-sync=target MESHBUS_PURE_PYTHON=0 lint typecheck pytest pytest-pure

# meshctl up --nats-cluster 3 losing one, then two NATS nodes under traffic (about a minute).
cluster-test: $(NATIVE_STAMP)
	MESHBUS_CLUSTER_TESTS=1 $(BIN)/pytest -q -s tests/e2e/test_nats_cluster.py

# Random SIGKILLs of NATS nodes and control-plane processes under traffic, applies and short-lived
# certificates (CHAOS_SECONDS, default 180); figures printed at the end.
CHAOS_SECONDS ?= 180
chaos: $(NATIVE_STAMP)
	MESHBUS_CHAOS=1 MESHBUS_CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/pytest -q -s tests/chaos

# The table of docs/smuggling.md: every vector through meshbus and HAProxy (when installed).
smuggling: $(NATIVE_STAMP)
	$(BIN)/python -m tests.support.smuggling

# Long fuzzing: each target coverage-guided with atheris for FUZZ_SECONDS (corpus and crashes in
# tests/fuzz/), then the hypothesis fuzz tests with their long profile. The suite runs a CI-sized
# hypothesis pass and replays the corpus and every crash kept.
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := http1_request http1_response bus_message config jwt
fuzz: $(STAMP)
	$(BIN)/pip install --quiet "atheris>=2.3"
	mkdir -p build
	for t in $(FUZZ_TARGETS); do \
	  PYTHONPATH=. $(BIN)/python -m tests.fuzz.atheris_main $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    > build/fuzz-$$t.log 2>&1; rc=$$?; \
	  echo "== $$t (build/fuzz-$$t.log)"; grep -E "^(Done|stat::new_units_added)|Uncaught|Test unit written" build/fuzz-$$t.log; \
	  [ $$rc -eq 0 ] || exit $$rc; \
	done
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q tests/fuzz -p no:cacheprovider --timeout=3600

bench: $(NATIVE_STAMP)
	$(BIN)/python bench/run.py

# SOAK_SECONDS at 70% of the capacity of two sidecars with mTLS, access logs and metrics on: RSS, fds
# and p99 per window after the warm-up; exits non-zero when a target fails (bench/soak.py).
SOAK_SECONDS ?= 600
soak: $(NATIVE_STAMP)
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) .mypy-src .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find $(NATIVE_DIRS) -name '*.so' -delete
