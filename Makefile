# Everything runs from a virtual environment in .venv, created on first use.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
DATA_DIR   ?= ./data
WRITE_ADDR ?= 127.0.0.1:50051
READ_ADDR  ?= 127.0.0.1:50052
STAMP      := $(VENV)/.installed

.PHONY: help install proto run write projector read test lint bench bench-full clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(STAMP)  ## create .venv and install the pinned dependencies

proto: $(STAMP)  ## regenerate orders_api/ from protos/
	$(PY) tools/gen_proto.py

$(DATA_DIR):
	mkdir -p $(DATA_DIR)

run: proto | $(DATA_DIR)  ## start write service, projector and read service; Ctrl-C stops all three
	$(PY) -m tools.run_all --data-dir $(DATA_DIR) --write-addr $(WRITE_ADDR) --read-addr $(READ_ADDR)

write: proto | $(DATA_DIR)  ## start the write service alone
	$(PY) -m write_service --listen $(WRITE_ADDR) --event-store $(DATA_DIR)/events.db

projector: proto | $(DATA_DIR)  ## start the projector alone
	$(PY) -m projector --event-store $(DATA_DIR)/events.db --read-db $(DATA_DIR)/read.db

read: proto | $(DATA_DIR)  ## start the read service alone
	$(PY) -m read_service --listen $(READ_ADDR) --read-db $(DATA_DIR)/read.db --event-store $(DATA_DIR)/events.db

test: proto  ## run the whole test suite
	$(PY) -m pytest

lint: $(STAMP)  ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: proto  ## benchmark vs no-op gRPC and raw SQLite ceilings; results in bench/results/ (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

bench-peer: proto  ## the benchmark plus the eventsourcing peer (installs bench/requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) -m bench --peer $(BENCH_ARGS)

clean:  ## remove the virtual environment, caches and ./data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DATA_DIR)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
