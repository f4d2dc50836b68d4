# Inpaint Studio: `make run` starts the app, `make test` runs the whole test suite.
# Both create the virtual environment and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
ADDRESS ?= localhost
# The suite runs on a worker per core, three at most (each holds its own tiny models and servers);
# PARALLEL= runs it in one process. tests/conftest.py says which tests share a worker.
PARALLEL ?= -n auto --maxprocesses 3 --dist loadgroup

.PHONY: run dev test test-fast browser screenshots bench bench-peers tiny-models clean

# The project itself goes in editable after its requirements, so that $(VENV)/bin/inpaint-studio works
# from any folder (.installed-dev builds on .installed, so the test set-up has it too). --no-deps and,
# when the venv's setuptools can build wheels (70.1 or newer, or with the wheel package), its own
# setuptools: nothing is downloaded. Python 3.11's bundled setuptools 65 cannot; pip then fetches one.
INSTALL_PROJECT = if $(PY) -c "import setuptools.command.bdist_wheel" 2>/dev/null \
	|| $(PY) -c "import setuptools, wheel" 2>/dev/null; then isolation=--no-build-isolation; fi; \
	$(PY) -m pip install --disable-pip-version-check --no-deps $$isolation -e .

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	$(INSTALL_PROJECT)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-distributed.txt
	$(PY) -m pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

## Set up (first time) and start the app on http://$(ADDRESS):$(PORT)
run: $(VENV)/.installed
	MALLOC_ARENA_MAX=2 $(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --server.address $(ADDRESS)

## Like run, reloading when a source file changes
dev: $(VENV)/.installed
	MALLOC_ARENA_MAX=2 $(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --server.fileWatcherType auto --server.runOnSave true

## Set up (first time, with Chromium when root) and run every test: unit, AppTest, browser
test: $(VENV)/.installed-dev browser
	$(PY) -m pytest $(PARALLEL)

## Everything but the slow tests (real browsers, Ray, benchmarks)
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest $(PARALLEL) -m "not slow"

browser:
	@sh scripts/ensure-chromium.sh

## Retake the README's screenshots (docs/screenshots) with the browser tests
screenshots: $(VENV)/.installed-dev browser
	INPAINT_STUDIO_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/browser

## Benchmarks, measured side by side with their references
bench: $(VENV)/.installed
	$(PY) -m bench

## Side by side with IOPaint (installed once into its own venv under .cache/peers/, about 6 GB with
## its torch: it pins other library versions than this project, so it never shares this venv).
PEERS := .cache/peers
IOPAINT := $(PEERS)/iopaint/bin/iopaint

$(IOPAINT):
	$(PYTHON) -m venv $(PEERS)/iopaint
	$(PEERS)/iopaint/bin/pip install --disable-pip-version-check iopaint==1.6.0

bench-peers: $(VENV)/.installed $(IOPAINT)
	$(PY) -m bench --only peers

## Tiny random models for trying the app without real weights (see README)
tiny-models: $(VENV)/.installed
	$(PY) -m tests.tiny_models .cache/tiny-models

clean:
	rm -rf $(VENV) .pytest_cache .cache bench/results inpaint_studio.egg-info
