# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make run    build the venv and the models if needed, then serve on 127.0.0.1:8000 (CPU, in-process cache)
#   make test   build the venv and the models if needed, then run the whole test suite
#   make lint   ruff: lint rules and format check (run by .ci/run before the tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test image-test models venv lint clean

# Progress lines and real problems only: each setup step prints one line; a step's full output goes to
# $(SETUP_LOG) and is printed only when the step fails (so pip's errors are still shown in full). pip's own
# "ERROR" lines are printed even when it exits 0 (e.g. the resolver's dependency-conflict report).
SETUP_LOG = $(VENV)/setup.log
EXTRAS := .[export,test]
quietly = $(1) > $(SETUP_LOG) 2>&1 || { cat $(SETUP_LOG); echo "[setup] FAILED: $(1) (log: $(SETUP_LOG))"; exit 1; }; \
	grep '^ERROR' $(SETUP_LOG) || true

run: models
	@echo "[run] $(BIN)/taggram serve"
	@$(BIN)/taggram serve

test: models
	@echo "[test] $(BIN)/python -m pytest"
	@$(BIN)/python -m pytest

# ruff (pinned in the test extra and constraints.txt; configured in pyproject.toml): the lint rules, then the format.
lint: $(STAMP)
	@echo "[lint] $(BIN)/ruff check . && $(BIN)/ruff format --check ."
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

# The container tier alone: starts an engine when none answers (deploy/container-engine.sh, root), builds the cpu
# image and checks it running as compose runs it, then the compose stack (docs/operations.md). `make test` runs them too.
image-test: $(STAMP)
	@echo "[image-test] $(BIN)/python -m pytest -s tests/system/test_image.py tests/system/test_gpu_image.py tests/system/test_compose.py tests/system/test_clean_machine.py"
	@$(BIN)/python -m pytest -s -rA tests/system/test_image.py tests/system/test_gpu_image.py tests/system/test_compose.py tests/system/test_clean_machine.py

models: $(STAMP)
	@echo "[models] building missing models (python -m model_export)"
	@$(BIN)/python -m model_export

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@echo "[setup] creating $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[setup] upgrading pip"
	@$(call quietly,$(BIN)/python -m pip install --quiet --upgrade pip)
	@echo "[setup] installing pinned dependencies (runtime + export + test extras); log: $(SETUP_LOG)"
	@$(call quietly,$(BIN)/python -m pip install --quiet --progress-bar off -c constraints.txt -e '$(EXTRAS)')
	@touch $@
	@echo "[setup] done"

clean:
	rm -rf $(VENV) models .cache
