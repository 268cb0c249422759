# The book's commands. `make book` and `make test` work from a fresh clone: they create .venv and
# install everything first. See README.md.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# MNIST: CI and the authors' machines have a copy beside the project; readers' Keras downloads it.
SHARED_MNIST := $(abspath ../shared/data/mnist.npz)
ifeq ($(origin MNIST_NPZ), undefined)
  ifneq ($(wildcard $(SHARED_MNIST)),)
    export MNIST_NPZ := $(SHARED_MNIST)
  endif
endif
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 3

LESSONS   := $(filter-out %_exercises.ipynb,$(wildcard notebooks/*.ipynb))
EXERCISES := $(wildcard notebooks/*_exercises.ipynb)
SOLUTIONS := $(wildcard solutions/*_solutions.ipynb)
NBVAL     := $(BIN)/pytest --nbval-current-env -p no:cacheprovider -n 2 --dist loadfile -q

.PHONY: install book test lint exercises exercises-check unit nbval nbval-second nbval-exercises book-strict \
        notebooks bench lab clean browser-deps site-test fresh-install stability

install: $(STAMP)
# First the Python version (pyproject.toml's requires-python): a clear message, not a pip error.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) tools/check_python.py || { echo "(make used PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## book: build the HTML book strictly (warnings are errors) into _build/html
book: install
	$(BIN)/python tools/tasks.py book

## test: everything CI checks
test: install lint exercises-check unit nbval nbval-second nbval-exercises fresh-install book-strict \
      site-test
	@echo "make test: all checks passed"

lint: install
	$(BIN)/ruff check .

exercises: install
	$(BIN)/python tools/make_exercises.py

exercises-check: install
	$(BIN)/python tools/make_exercises.py --check

unit: install
	$(BIN)/pytest -q tests --ignore=tests/notebooks --ignore=tests/browser --ignore=tests/install

## fresh-install: `pip install .` (no extras) into a fresh virtual environment, then chapter 1's
## exercise notebook with it (packages from a wheelhouse filled from PyPI on the first run)
fresh-install: install
	$(BIN)/pytest -q -p no:cacheprovider tests/install

## nbval: strict (outputs compared) on lessons and solutions
nbval: install
	$(NBVAL) --nbval $(LESSONS) $(SOLUTIONS)

## nbval-second: the same strict pass with other numeric kernels (oneDNN capped at SSE4.1 and its
## rewrites off, NumPy's widest SIMD targets on this machine off; tools/second_pass.py prints
## which): stored outputs must not depend on the CPU's kernels
nbval-second: install
	$(BIN)/python tools/second_pass.py -- $(NBVAL) --nbval $(LESSONS) $(SOLUTIONS)

## nbval-exercises: exercise notebooks run top to bottom (they store no outputs), and every check
## cell in them says "not done yet"
nbval-exercises: install
	$(BIN)/pytest -p no:cacheprovider -n 2 --dist loadfile -q tests/notebooks

book-strict: install
	rm -rf _build/html
	$(BIN)/python tools/tasks.py book

## notebooks: re-execute lessons and solutions in place (after editing them), then the exercises
notebooks: install
	$(BIN)/python tools/run_notebooks.py $(or $(NB),$(LESSONS) $(SOLUTIONS))
	$(BIN)/python tools/make_exercises.py

## stability: strict nbval of NB (default: every lesson and solution) under three other kernel
## sets, and the cells whose output changed under any of them; run it before committing an experiment
stability: install
	$(BIN)/python tools/stability.py $(or $(NB),$(LESSONS) $(SOLUTIONS))

bench: install browser-deps
	$(BIN)/python tools/bench.py $(NB)

## lab: JupyterLab on the whole repository, opened on notebooks/ (solutions/ is beside it)
lab: install
	$(BIN)/python tools/tasks.py lab

clean:
	rm -rf _build

## browser-deps: Debian's chromium for the browser tests (apt-get, only when it is missing).
## BNBOOK_BROWSER=/path/to/chromium, or BNBOOK_BROWSER=playwright for Playwright's own build
## (`.venv/bin/python -m playwright install chromium`), skips it.
browser-deps:
	@test -n "$$BNBOOK_BROWSER" || test -x /usr/bin/chromium || bash tools/install_system_deps.sh

## site-test: every page of the built book in headless Chromium, and a learner's JupyterLab session
## (HTML=dir checks another build, e.g. HTML=/tmp/site-build/_build/html)
site-test: install browser-deps
	$(BIN)/pytest -q -p no:cacheprovider tests/browser --html-dir=$(or $(HTML),_build/html)
