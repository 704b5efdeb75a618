# The two commands: `make demo` runs a simulated lane end to end on embedded
# defaults; `make test` runs the test suite. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,calibration]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/orelane demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/ingest.py
	$(VENV)/bin/python bench/edge.py
	$(VENV)/bin/python bench/vision.py
	$(VENV)/bin/python bench/spectral.py

clean:
	rm -rf $(VENV) var .pytest_cache
