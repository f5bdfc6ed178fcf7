# The README's two commands are `make agent` and `make test`; both set up the host first.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup agent test soak lint unit bench clean-host hubble-protos

setup:
	./scripts/setup-host.sh

agent: setup
	$(VENV)/bin/ciliumpy agent $(AGENT_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS) tests

# the variants kept out of `make test` for its time budget (pytest's last -m wins)
soak: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS) -m soak tests

unit: setup
	$(VENV)/bin/pytest tests/unit

bench: setup
	$(PY) -m bench.run

# regenerate ciliumpy/hubble/gen from the vendored Hubble protos (needs grpcio-tools)
hubble-protos:
	./scripts/hubble-protos.sh
