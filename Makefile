# The two entry points a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run cluster demo test lint typecheck unit bench clean nats-server chromium compiler build

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The pure core compiled with mypyc (setup.py; docs/ENGINE.md, "Compiled core"). Python imports
# a module's extension in place of its source, so an edited module runs its old code until
# rebuilt: rebuilt here whenever a source is newer than the record of the last full build. The
# install compiles it too (order-only: a fresh venv does not compile it twice). Without a C
# compiler, or when the build fails, the extensions are removed and the core runs interpreted
# (the same behaviour, slower); so it does with EXCHANGE_PURE_PYTHON set.
CORE := exchange/domain
CORE_RECORD := $(CORE)/compiled_sources.json
CORE_LOG := $(VENV)/build-core.log
INTERPRETED_CORE = rm -f $(CORE)/*.so $(CORE_RECORD); echo "core: interpreted ($(1)): the same behaviour, slower"

ifneq ($(EXCHANGE_PURE_PYTHON),)
build: | $(STAMP)
	@$(call INTERPRETED_CORE,EXCHANGE_PURE_PYTHON is set)
else
build: $(CORE_RECORD)
endif

$(CORE_RECORD): $(wildcard $(CORE)/*.py) setup.py | $(STAMP)
	@if [ -f $@ ] && [ -z "$$(find $^ -newer $@)" ]; then exit 0; fi; \
	if ! PYTHON=$(PYTHON) bash .ci/install-compiler --check; then \
		$(call INTERPRETED_CORE,no C compiler or Python headers: make compiler installs them); \
	else \
		echo "core: compiling $(CORE) with mypyc (log: $(CORE_LOG))"; \
		if $(BIN)/python setup.py -q build_ext --inplace -j 2 >$(CORE_LOG) 2>&1 && [ -f $@ ]; \
		then echo "core: $$($(BIN)/python -m exchange.compiled_core)"; \
		else $(call INTERPRETED_CORE,its build failed: see $(CORE_LOG)); fi; \
	fi

# A C compiler and Python's headers, as root (apt-get), for `make test`: the tests run the
# compiled core. `make run` never needs it.
compiler:
	PYTHON=$(PYTHON) bash .ci/install-compiler

# The exchange with a demo market and its simulated traders, on the embedded file journal in
# ./data; the trading page is at http://127.0.0.1:8080/.
run: $(STAMP) build
	$(BIN)/exchange serve --demo --simulate --data-dir ./data

# The same exchange as processes over NATS, replicated: 3 nats-server nodes (stream and lease R3),
# 2 sequencers (a leader and a warm standby) and 2 gateways (8080, 8081).
cluster: $(STAMP) nats-server build
	$(BIN)/exchange cluster --data-dir ./cluster-data --nats-nodes 3 --sequencers 2 --gateways 2 --demo

# A short scripted session on the in-process engine, printed (no server).
demo: $(STAMP) build
	$(BIN)/exchange demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian's nats-server, for the tests that start real NATS nodes (`make run` never needs it).
nats-server:
	bash .ci/install-nats-server

# Debian's chromium, for the web page's browser tests (Playwright drives it; never a download).
chromium:
	bash .ci/install-chromium

unit: $(STAMP) nats-server chromium compiler build
	$(BIN)/pytest -q

# The compiler first: the venv's install then compiles the core at once (unit needs it anyway).
test: compiler lint typecheck unit

bench: $(STAMP) build
	$(BIN)/python -m loadtest.bench_engine --ops 1000000 --seed 1 --json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts build
	rm -f $(CORE)/*.so $(CORE_RECORD)
