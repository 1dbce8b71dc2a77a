# Two commands from a fresh clone (only Python 3.11 and pip needed):
#   make tutorial   run every notebook at its default parameters into outputs/notebooks/
#   make test       lint and format checks (ruff), then the test suite, notebooks included (nbval)
#   make test-cpus  the training notebooks checked again with PyTorch's CPU kernels of every lower instruction set
#   make pins       pin binder/ and environment.yml to the versions the tests ran with
# TORCH is what pip installs first, from TORCH_INDEX: PyTorch's CPU wheels unless asked
# otherwise, so that a Linux machine does not pull a CUDA build of several GB. For a GPU:
#   make tutorial TORCH_INDEX=https://download.pytorch.org/whl/cu128
# and TORCH_INDEX= (empty) lets pip choose from its usual index.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
EXECUTED := outputs/notebooks

.PHONY: tutorial test test-cpus pins clean

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
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/fss fetch --all
	$(BIN)/python -m pytest --durations=25

test-cpus: $(VENV)/.installed-test
	$(BIN)/fss fetch --all
	$(BIN)/python -m pytest -m cpus --durations=5 tests/test_cpu_capabilities.py

pins: $(VENV)/.installed-test
	$(BIN)/python tools/pin_environments.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	@echo "Installing $(TORCH)$(if $(TORCH_INDEX), from $(TORCH_INDEX)) and fss[$*] into $(VENV)/"
	$(BIN)/python -m pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e ".[$*]"
	@touch $@

clean:
	rm -rf $(VENV) outputs
