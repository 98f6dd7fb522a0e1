# The two commands: `make run` and `make test`. CI runs `make test` verbatim (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run stop status test lint bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole platform on this machine (PostgreSQL, Redis, Mosquitto, services, simulator)
run: $(STAMP)
	$(BIN)/insa stack up

## stop: stop exactly what `make run` started
stop: $(STAMP)
	$(BIN)/insa stack down

status: $(STAMP)
	$(BIN)/insa stack status

## test: install what is needed and run the whole suite against real servers
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile --durations=20

lint: $(STAMP)
	$(BIN)/ruff check shared services devtools tests
	$(BIN)/mypy

## bench: ingest benchmark against a private stack (prints figures, writes JSON)
bench: $(STAMP)
	$(BIN)/insa bench ingest

clean: stop
	rm -rf .run
