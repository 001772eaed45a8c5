# Everything runs from a virtual environment in .venv, created on first use.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
DATA_DIR   ?= ./data
WRITE_ADDR ?= 127.0.0.1:50051
READ_ADDR  ?= 127.0.0.1:50052
# A path (SQLite) or a postgresql:// URL, passed to the processes as is.
EVENT_STORE ?= $(DATA_DIR)/events.db
READ_DB     ?= $(DATA_DIR)/read.db
STAMP      := $(VENV)/.installed

.PHONY: help install proto run write projector rebuild read test lint bench bench-peer soak soak-postgres test-e2e-postgres clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(STAMP)  ## create .venv and install the pinned dependencies

# The generated code is committed; it is rebuilt when the .proto or the generator is newer, and
# tests/ fail if it ever differs from what the pinned tools make of protos/.
GENERATED := orders_api/v1/orders_pb2.py

$(GENERATED): protos/orders/v1/orders.proto tools/gen_proto.py | $(STAMP)
	$(PY) tools/gen_proto.py

proto: $(GENERATED)  ## regenerate orders_api/ from protos/ if they changed

$(DATA_DIR):
	mkdir -p $(DATA_DIR)

run: $(STAMP) proto | $(DATA_DIR)  ## start write service, projector and read service; Ctrl-C stops all three
	$(PY) -m tools.run_all --data-dir $(DATA_DIR) --write-addr $(WRITE_ADDR) --read-addr $(READ_ADDR) \
		--event-store $(EVENT_STORE) --read-db $(READ_DB)

write: $(STAMP) proto | $(DATA_DIR)  ## start the write service alone
	$(PY) -m write_service --listen $(WRITE_ADDR) --event-store $(EVENT_STORE)

projector: $(STAMP) proto | $(DATA_DIR)  ## start the projector alone
	$(PY) -m projector --event-store $(EVENT_STORE) --read-db $(READ_DB)

rebuild: $(STAMP) proto | $(DATA_DIR)  ## rebuild the read models beside the live ones and swap them in (PROJECTION=name for one)
	$(PY) -m projector --event-store $(EVENT_STORE) --read-db $(READ_DB) rebuild $(if $(PROJECTION),--projection $(PROJECTION))

read: $(STAMP) proto | $(DATA_DIR)  ## start the read service alone
	$(PY) -m read_service --listen $(READ_ADDR) --read-db $(READ_DB) --event-store $(EVENT_STORE)

test: $(STAMP) proto  ## the whole suite (unit, contract, integration, end to end), then the end-to-end suite on PostgreSQL
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-e2e-postgres

lint: $(STAMP)  ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP) proto  ## benchmark vs no-op gRPC and raw SQLite ceilings; results in bench/results/ (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

bench-peer: proto  ## the benchmark plus the eventsourcing peer (installs bench/requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) -m bench --peer $(BENCH_ARGS)

SOAK_SECONDS ?= 120

soak: $(STAMP) proto  ## the trio under load while a random process is SIGKILLed every 2-6 s; fails on any loss (SOAK_SECONDS=120)
	$(PY) -m tools.soak --seconds $(SOAK_SECONDS)

test-e2e-postgres: $(STAMP) proto  ## the whole end-to-end suite with every trio on fresh PostgreSQL databases
	ORDERS_E2E_BACKEND=postgres $(PY) -m pytest -q tests/e2e

soak-postgres: $(STAMP) proto  ## 4 write services x 2,000 commands on one PostgreSQL while a reader tails the log gap-free
	ORDERS_PG_COMMANDS_PER_WRITER=2000 $(PY) -m pytest -q -s tests/e2e/test_e2e_postgres_concurrency.py

clean:  ## remove the virtual environment, caches and ./data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DATA_DIR)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
