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
	$(BIN)/lorafit train examples/banking77/train.csv --out runs/demo --overwrite
	$(BIN)/lorafit evaluate runs/demo examples/banking77/test.csv
	$(BIN)/lorafit predict runs/demo --top-k 3 "I still have not received my new card" \
		"Can I top up with Apple Pay?" "Why was I charged a fee for my transfer?"

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs/demo
