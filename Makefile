# `make demo` and `make test` do all set-up on a fresh machine (Python >= 3.10, no GPU needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install browser clean bench bench-predict bench-install

# The benchmarks behind BENCHMARKS.md (about 70 minutes on the 2-core machine; needs ../shared/data).
DATA ?= ../shared/data
RESULTS ?= bench/results

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

# Debian's Chromium for the browser tests (report page, service page); skipped with a message where it cannot
# be installed (no root or no apt-get): those tests then skip too, unless LORAFIT_REQUIRE_BROWSER=1.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 \
		&& apt-get install -y -q chromium >/dev/null 2>&1; }; }; } \
		|| echo "chromium could not be installed: the browser tests will be skipped"

test: install browser
	$(BIN)/python -m pytest -q tests

# The reference recipes need datasets (the `bench` extra), which lorafit itself does not; installed once per
# venv (again after pyproject.toml or constraints.txt change, which rebuild the venv's install).
$(VENV)/.bench-installed: $(BIN)/lorafit
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

bench-install: $(VENV)/.bench-installed

bench: bench-install
	$(BIN)/python bench/side_by_side.py $(DATA)/banking77/train.csv $(DATA)/banking77/test.csv \
		$(RESULTS)/banking77_side_by_side.jsonl --rounds 2
	$(BIN)/python bench/raw_speed.py $(DATA)/banking77/train.csv $(DATA)/banking77/test.csv \
		$(RESULTS)/banking77_raw_speed.jsonl --rounds 2 --epochs 5
	$(BIN)/python bench/levers.py $(DATA)/banking77/train.csv $(DATA)/banking77/test.csv \
		$(RESULTS)/levers_banking77.jsonl
	$(BIN)/python bench/few_shot.py $(RESULTS)/few_shot.jsonl \
		--data banking77=$(DATA)/banking77/train.csv,$(DATA)/banking77/test.csv \
		sst2=$(DATA)/sst2/train.csv,$(DATA)/sst2/validation.csv
	$(BIN)/python bench/side_by_side.py $(DATA)/sst2/train.csv $(DATA)/sst2/validation.csv \
		$(RESULTS)/sst2_side_by_side.jsonl --rounds 1 --expert-epochs 1
	$(MAKE) bench-predict

# Prediction throughput on BANKING77 test (a few minutes; trains the run it measures once, then reuses it):
# the boilerplate's one-text predict(), the batched transformers pipeline, lorafit's torch, ONNX and int8 paths.
PREDICT_RUN ?= runs/banking77-predict-bench
bench-predict: bench-install
	test -f $(PREDICT_RUN)/lorafit.json || $(BIN)/lorafit train $(DATA)/banking77/train.csv --out $(PREDICT_RUN) \
		--no-progress --overwrite
	for threads in 1 2; do $(BIN)/python bench/predict_speed.py $(PREDICT_RUN) $(DATA)/banking77/test.csv \
		$(RESULTS)/banking77_predict_speed_t$$threads.jsonl --rounds 3 --threads $$threads || exit 1; done

clean:
	rm -rf $(VENV) runs/demo
