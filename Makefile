# The two commands: `make run` and `make test`. CI runs `make test` verbatim (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SPARKPLUG := shared/sparkplug
EDGE := tests/tools/sparkplug_edge
# Made by the install, not committed: the Sparkplug B protobuf module and the tests' edge
# node packages. One missing (a fresh work tree, git clean -X) makes the stamp stale too.
GENERATED := $(SPARKPLUG)/sparkplug_b_pb2.py $(SPARKPLUG)/sparkplug_b_pb2.pyi \
	$(EDGE)/node_modules/.package-lock.json
# The browser the console's tests drive (tests/fixtures/browser.py): Debian's, installed on
# the machine by the install, so a new machine without it makes the stamp stale too.
CHROMIUM := /usr/bin/chromium
NEEDED := $(GENERATED) $(CHROMIUM)

.PHONY: run stop status test lint bench install clean FORCE

$(STAMP): pyproject.toml $(SPARKPLUG)/sparkplug_b.proto $(EDGE)/package-lock.json \
		$(if $(filter-out $(wildcard $(NEEDED)),$(NEEDED)),FORCE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m grpc_tools.protoc -I $(SPARKPLUG) --python_out=$(SPARKPLUG) \
		--pyi_out=$(SPARKPLUG) $(SPARKPLUG)/sparkplug_b.proto
	# The tests' Sparkplug edge node runs on Node.js: Debian's, where the machine has none.
	command -v npm >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	npm ci --prefix $(EDGE) --no-audit --no-fund
	# The browser tests drive Debian's Chromium (Playwright never downloads one). Without
	# its recommends (systemd, udev, avahi, printing: nothing a headless browser uses);
	# fonts-liberation gives screenshots the metrics of the fonts pages ask for (Arial...).
	test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium fonts-liberation; }
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
