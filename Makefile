# The newcomer's commands: `make run` (the gateway on the emulated board) and `make test`.
# Both set themselves up first (venv, MicroPython unix port, mosquitto/socat/tshark).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
PYTEST := $(PY) -m pytest

.PHONY: setup test run bench soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml host_tools/setup.sh
	bash host_tools/setup.sh
	touch $(STAMP)

test: setup
	$(PYTEST) -m "not slow"

run: setup
	$(VENV)/bin/ppmid emulate --state-dir run

bench: setup
	$(PY) bench/run.py

soak: setup
	$(PYTEST) -m slow

clean:
	rm -rf run .pytest_cache bench/results.json
