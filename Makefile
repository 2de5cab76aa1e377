# The README's two set-up commands: `make bench` (the main job) and `make test`.
# Both create or refresh the virtual environment in .venv from setup.py + constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test venv clean

$(STAMP): setup.py constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,eval,viz,screening]"
	touch $(STAMP)

venv: $(STAMP)

bench: $(STAMP)
	$(PY) -m benchmarks

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
