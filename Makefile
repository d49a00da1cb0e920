# The two commands of README.md. Both create ./.venv with the tested stack first (a no-op when it is up to date).
PYTHON ?= python3
VENV := .venv
PYTEST_ARGS ?=

.PHONY: demo test test-fast env

env:
	PYTHON=$(PYTHON) tools/setup_env.sh

# The small end-to-end recipe: synthetic speech -> tokens -> stats -> training -> decoding -> scoring.
demo: env
	cd egs/mini/asr1 && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./run.sh

# The whole test suite, as CI runs it.
test: env
	$(VENV)/bin/python -m pytest -q -rs $(PYTEST_ARGS)

# Everything but the end-to-end runs through ESPnet's command-line entry points.
test-fast: env
	$(VENV)/bin/python -m pytest -q -rs -m "not slow" $(PYTEST_ARGS)
