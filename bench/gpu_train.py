"""Train lorafit on a CUDA GPU (bf16 by default), evaluate on TEST, append one JSON line to RESULTS.

Usage: python bench/gpu_train.py TRAIN.csv TEST.csv [--results FILE] [--precision bf16|fp16|fp32|auto]
                                 [--gpus N] [--model minilm] [other `lorafit train` flags]

With ``--gpus N`` (N > 1) training runs as ``torchrun --standalone --nproc_per_node N -m lorafit train``
(DistributedDataParallel over NCCL). The line holds the training rate (``train_samples_per_s``, rows per
second of the optimisation loop and evaluations), the test accuracy, the validation accuracy, the
precision and process count the run recorded, and the GPU. Without CUDA it stops at once with exit
code 2 and a message, and writes nothing.

Example (BANKING77, one GPU):
    python bench/gpu_train.py /work/shared/data/banking77/train.csv /work/shared/data/banking77/test.csv
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_GPU = 2
"""Exit code without a CUDA GPU."""
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "banking77_gpu.jsonl"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's own options, and the rest (flags for `lorafit train`)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSONL file the result line is appended to")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32", "auto"])
    p.add_argument("--gpus", type=int, default=1, help="processes (one GPU each); >1 runs under torchrun")
    p.add_argument("--model", default="minilm")
    known, extra = p.parse_known_args(argv)
    return known, [x for x in extra if x != "--"]


def gpu_or_exit() -> str:
    """The GPU's name, or exit with a message when this machine has no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        print(f"bench/gpu_train.py needs a CUDA GPU: torch {torch.__version__} sees none "
              f"(built with CUDA {torch.version.cuda}); run it on a machine with one. Nothing was written.",
              file=sys.stderr)
        raise SystemExit(NO_GPU)
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def lorafit(args: list[str], gpus: int = 1) -> tuple[float, str]:
    """Run ``lorafit ARGS`` (under torchrun with ``gpus`` > 1); (wall seconds, stdout)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)] \
        if gpus > 1 else [sys.executable]
    start = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "lorafit", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        raise SystemExit(f"lorafit {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def main(argv: list[str] | None = None) -> None:
    a, extra = parse(sys.argv[1:] if argv is None else argv)
    gpu = gpu_or_exit()
    with tempfile.TemporaryDirectory() as work:
        run = os.path.join(work, "run")
        wall, _ = lorafit(["train", a.train, "--out", run, "--no-progress", "--model", a.model,
                           "--precision", a.precision, *extra], a.gpus)
        _, stdout = lorafit(["evaluate", run, a.test, "--json"])
        metrics = json.loads(Path(run, "metrics.json").read_text())
        manifest = json.loads(Path(run, "lorafit.json").read_text())
    record = {"tool": "lorafit", "script": "bench/gpu_train.py", "gpu": gpu, "args": extra,
              "precision": manifest["train_precision"], "world_size": manifest.get("world_size", 1),
              "train_rows": metrics["train_samples"], "steps": metrics["steps"],
              "train_samples_per_s": round(metrics["train_samples_per_second"], 1),
              "train_wall_s": round(metrics["train_wall_seconds"], 2), "train_process_wall_s": round(wall, 1),
              "val_accuracy": metrics["validation"].get("accuracy"),
              "test_accuracy": round(json.loads(stdout)["accuracy"], 4), "mfu": metrics.get("mfu"),
              "date": time.strftime("%Y-%m-%d"), **_versions()}
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a") as sink:
        sink.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


if __name__ == "__main__":
    main()
