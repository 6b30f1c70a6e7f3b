# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make run    build the venv and the models if needed, then serve on 127.0.0.1:8000 (CPU, in-process cache)
#   make test   build the venv and the models if needed, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch for the model export lies on local disk on our machines; elsewhere pip takes it from PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

.PHONY: run test models venv lint clean

run: models
	$(BIN)/taggram serve

test: models
	$(BIN)/python -m pytest

models: $(STAMP)
	$(BIN)/python -m model_export

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@echo "[setup] creating $(VENV) and installing pinned dependencies (runtime + export + test extras)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off $(FIND_LINKS) -c constraints.txt -e '.[export,test]'
	touch $@

clean:
	rm -rf $(VENV) models .cache
