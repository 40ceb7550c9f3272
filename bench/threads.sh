#!/usr/bin/env bash
# OpenMP wait policy, alone and beside a busy process: `lorafit train` on the bundled slice, 1 epoch.
# Usage: bash bench/threads.sh   (prints one WALL line per run; results in BENCHMARKS.md, "Threads")
cd "$(dirname "$0")/.."; export HF_HUB_OFFLINE=1
T="examples/banking77/train.csv --out "$(mktemp -d)/run" --overwrite --no-progress --epochs 1 --min-steps 0"
for pol in ACTIVE PASSIVE; do
  OMP_WAIT_POLICY=$pol /usr/bin/time -f "$pol alone WALL=%e" timeout 150 .venv/bin/lorafit train $T 2>&1 | grep WALL
done
for pol in ACTIVE PASSIVE; do
  timeout 160 python3 -c "while True: pass" &
  sleep 1
  OMP_WAIT_POLICY=$pol /usr/bin/time -f "$pol busy-neighbour WALL=%e" timeout 150 .venv/bin/lorafit train $T 2>&1 | grep -E "WALL|status"
  pkill -f "while True: pass"
done
