#!/bin/bash
# The GPU check of BENCHMARKS.md ("the first CUDA machine"), on a machine with a CUDA GPU and lorafit installed
# with its test and bench extras: the test suite under CUDA, then BANKING77 trained by lorafit
# (bench/gpu_train.py, bf16) and by the expert recipe (--bf16 --group) one after the other, then SST-2 by lorafit.
# Each training appends one JSON line to RESULTS_DIR/banking77_gpu.jsonl or sst2_gpu.jsonl.
#
# Usage: bench/gpu_check.sh [DATA_DIR (default ../shared/data)] [RESULTS_DIR (default bench/results)]
set -u
DATA=${1:-../shared/data}; RESULTS=${2:-bench/results}; PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
B=$DATA/banking77; S=$DATA/sst2
MODEL=$($PY -c "from lorafit.models import resolve_model; print(resolve_model('minilm'))") || exit 1
parallel=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")   # pytest-xdist, where installed
$PY -m pytest -q $parallel -p no:cacheprovider tests -rfEs || echo "the suite failed under CUDA (above)"
$PY bench/gpu_train.py $B/train.csv $B/test.csv --results $RESULTS/banking77_gpu.jsonl || exit 1
start=$(date +%s.%N)
$PY bench/reference/expert_recipe.py "$MODEL" $B/train.csv $B/test.csv "$(mktemp -d)" --bf16 --group > /tmp/expert.log 2>&1 \
  || { tail -20 /tmp/expert.log; exit 1; }
$PY - "$start" "$RESULTS/banking77_gpu.jsonl" <<'PYEOF'
import json, sys, time
import torch
line = [x for x in open("/tmp/expert.log") if x.startswith("{")][-1]
record = {"tool": "expert_recipe", "script": "bench/reference/expert_recipe.py", "args": ["--bf16", "--group"],
          "gpu": torch.cuda.get_device_name(0), **json.loads(line),
          "train_process_wall_s": round(time.time() - float(sys.argv[1]), 1), "date": time.strftime("%Y-%m-%d")}
open(sys.argv[2], "a").write(json.dumps(record) + "\n")
print(json.dumps(record))
PYEOF
$PY bench/gpu_train.py $S/train.csv $S/validation.csv --results $RESULTS/sst2_gpu.jsonl
