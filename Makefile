# The newcomer's commands: `make run` (the gateway on the emulated board) and `make test`.
# Both set themselves up first (venv, MicroPython unix port, mosquitto/socat/tshark).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
PYTEST := $(PY) -m pytest

.PHONY: setup test run bench soak image clean

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

# the fuzzers (tests/test_fuzz_parsers.py) run 150 inputs per parser in `make test`; the
# soak gives each FUZZ_EXAMPLES and adds the inputs taken to bench/fuzz_results.json
FUZZ_EXAMPLES ?= 20000
soak: setup
	$(PYTEST) -m slow
	PPMID_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PPMID_FUZZ_RESULTS=bench/fuzz_results.json $(PYTEST) -q tests/test_fuzz_parsers.py

# A MicroPython image with the app frozen in, for boards whose heap cannot hold it as .mpy
# files: needs MICROPY_DIR (a MicroPython source tree) and ESP-IDF (IDF_PATH, idf.py);
# says what is missing otherwise (host_tools/image.py).
image:
	@$(if $(wildcard $(PY)),$(PY),python3) -m host_tools.image "$(BOARD)"

clean:
	rm -rf run .pytest_cache bench/results.json
