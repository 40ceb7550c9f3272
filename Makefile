# `make demo` and `make test` do all set-up on a fresh machine (Python >= 3.10, no GPU needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install clean

$(BIN)/lorafit: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(BIN)/lorafit

install: $(BIN)/lorafit

demo: install
	$(BIN)/python examples/demo.py

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs/demo
