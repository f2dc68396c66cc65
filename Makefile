# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ACCOUNTS ?= 2000

.PHONY: run test lint bench faults soak install clean graphiql-assets

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the embedded database, load the demo data once, then serve the GraphQL API on
## localhost (the projector and the sealer in child processes); prints the URL, the console's URL
## (/console/), a regulator token and an example query (Ctrl-C stops).
run: install
	$(BIN)/ledger demo --accounts $(ACCOUNTS)
	LEDGER_GRAPHIQL=1 $(BIN)/ledger serve --demo-token

## The whole suite against real PostgreSQL (LEDGER_DATABASE_URL, else an embedded server of
## each worker's own), on TEST_WORKERS pytest-xdist workers. It first installs what the suite
## needs beyond the venv (scripts/test-tools.sh: Debian's chromium, the npm clients).
# Two workers against an external server: each worker's `ledger serve` processes hold about
# 30 connections, and a stock server allows 100.
TEST_WORKERS ?= $(if $(LEDGER_DATABASE_URL),2,4)
test: install
	bash scripts/test-tools.sh
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: install
	$(BIN)/ruff check ledger projections api tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.append
	$(BIN)/python -m bench.projections
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.identity
	$(BIN)/python -m bench.scale --quick
	$(BIN)/python -m bench.gc_pauses

## Faults under load on a PostgreSQL cluster of its own: backends terminated, restarts,
## the database stopped, the server killed; exits 1 when a goal is missed (a few minutes).
faults: install
	$(BIN)/python -m bench.faults

## A soak: `ledger serve` under writes, varied reads and 50 subscribers (ten resuming) for
## SOAK_MINUTES (10), sampled and checked; exits 1 when RSS grows more than 10% after
## warm-up, the read p99 drifts more than 1.5x, or an event is lost or doubled.
SOAK_MINUTES ?= 10
soak: install
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

## Refresh GraphiQL's vendored assets (api/static/graphiql) from the npm registry at the
## versions pinned in scripts/refresh_graphiql.py (needs npm).
graphiql-assets:
	$(PYTHON) scripts/refresh_graphiql.py

clean:
	rm -rf $(VENV) .ledger
