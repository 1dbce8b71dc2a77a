# Two commands from a fresh clone (only Python 3.11 and pip needed):
#   make tutorial   run every notebook at its default parameters into outputs/notebooks/
#   make test       run the test suite, notebooks included (nbval)
#   make pins       pin binder/ and environment.yml to the versions the tests ran with
# TORCH is what pip installs first; the default takes the CPU build on our machines.
# Elsewhere, for example: make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
EXECUTED := outputs/notebooks

.PHONY: tutorial test pins clean

tutorial: $(VENV)/.installed-notebooks
	$(BIN)/fss fetch --all
	@mkdir -p $(EXECUTED)
	@for notebook in $(NOTEBOOKS); do \
		echo "== $$notebook"; \
		$(BIN)/papermill --cwd notebooks "$$notebook" "$(EXECUTED)/$$(basename $$notebook)" || exit 1; \
	done
	@echo
	@echo "Executed notebooks: $(EXECUTED)/"
	@echo "Their results (figures, tables, checkpoints): outputs/<notebook name>/"

test: $(VENV)/.installed-test
	$(BIN)/fss fetch --all
	$(BIN)/python -m pytest

pins: $(VENV)/.installed-test
	$(BIN)/python tools/pin_environments.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	@touch $@

clean:
	rm -rf $(VENV) outputs
