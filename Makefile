# The two entry points a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run cluster demo test lint typecheck unit bench clean nats-server chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The exchange with a demo market and its simulated traders, on the embedded file journal in
# ./data; the trading page is at http://127.0.0.1:8080/.
run: $(STAMP)
	$(BIN)/exchange serve --demo --simulate --data-dir ./data

# The same exchange as processes over NATS, replicated: 3 nats-server nodes (stream and lease R3),
# 2 sequencers (a leader and a warm standby) and 2 gateways (8080, 8081).
cluster: $(STAMP) nats-server
	$(BIN)/exchange cluster --data-dir ./cluster-data --nats-nodes 3 --sequencers 2 --gateways 2 --demo

# A short scripted session on the in-process engine, printed (no server).
demo: $(STAMP)
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

unit: $(STAMP) nats-server chromium
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench_engine --ops 1000000 --seed 1 --json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts
