# The README's two commands. Both create and reuse .venv; nothing needs a GPU, a hub or a download.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch==2.13.0 is the CPU build that this machine's pip mirror serves fast; any torch >= 2.4 works.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) experiments/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check shortcutlens pretexts experiments tests

clean:
	rm -rf $(VENV) runs .pytest_cache
