"""Training and prediction in two processes (torchrun, gloo on the CPU) give what one process gives.

Two real processes are started with ``python -m torch.distributed.run``; they share one global batch of
``--batch-size`` rows per step, so with dropout off (the base model's and LoRA's: dropout masks are
random, and each process draws its own) the two-process run must follow the one-process run step for
step, up to float rounding: the gradient is summed in two halves and the halves' batches are padded to
their own widths.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import adapter_weights, child_env, kill_after_checkpoint, make_texts, write_table
from lorafit import Classifier
from lorafit.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
"""The launcher, to be followed by the number of processes."""
PROBABILITY_TOLERANCE = 1e-5
"""Largest difference allowed between the two runs' probabilities (both fp32; measured: 3e-8)."""


def _torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    command = [*TORCHRUN, str(processes), "-m", "lorafit", *args]
    # on the CPUs (gloo) also where there is a GPU: two processes would need two GPUs
    result = subprocess.run(command, env=child_env(hide_gpus=True), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model with its dropout switched off."""
    path = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("no_dropout") / "model"))
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def runs(no_dropout_model: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same training in one process (in this one) and in two (torchrun), and what they printed."""
    root = tmp_path_factory.mktemp("distributed")
    texts, labels = make_texts(12, seed=4)
    # 33 rows, imbalanced (12/12/9): with batch 16 every epoch ends on a 1-row batch, which leaves the
    # second process nothing of it (no label examples, which would add rows); class weights make the rows
    # count unequally. A random head (no probe) so that validation keeps a trained state rather than the probe's.
    keep = [i for i in range(len(texts)) if not (labels[i] == "sports" and sum(
        1 for j in range(i) if labels[j] == "sports") < 3)]
    train = write_table(root / "train.csv", {"text": [texts[i] for i in keep], "label": [labels[i] for i in keep]})
    val_texts, val_labels = make_texts(5, seed=5)  # 15 rows: 8 + 7 per process
    validation = write_table(root / "val.csv", {"text": val_texts, "label": val_labels})
    args = ["train", str(train), "--validation", str(validation), "--model", no_dropout_model, "--no-progress",
            "--precision", "fp32", "--epochs", "4", "--min-steps", "0", "--batch-size", "16",
            "--learning-rate", "5e-3", "--lora-dropout", "0", "--no-probe-init", "--class-weights", "auto",
            "--patience", "2", "--eval-every", "2", "--seed", "3", "--label-examples", "0"]
    single, double = root / "single" / "run", root / "double" / "run"
    main([*args, "--out", str(single)])
    launched = _torchrun([*args, "--out", str(double)])
    return {"single": single, "double": double, "stdout": launched.stdout, "stderr": launched.stderr,
            "train_rows": len(keep)}


def test_the_run_directory_is_written_once_by_rank_0(runs: dict) -> None:
    double = runs["double"]
    manifest = json.loads((double / "lorafit.json").read_text())
    assert manifest["world_size"] == 2  # both processes joined the process group and trained
    assert json.loads((runs["single"] / "lorafit.json").read_text())["world_size"] == 1
    # One writer: a second would have found the directory there and failed (non-zero exit); nothing is
    # left beside it (no temporary sibling, no checkpoints), and the summary is printed once.
    assert sorted(p.name for p in double.parent.iterdir()) == ["run"]
    assert {"adapter_model.safetensors", "lorafit.json", "metrics.json", "README.md", "report.html"} <= \
        {p.name for p in double.iterdir()}
    assert runs["stdout"].count("run directory:") == 1
    assert "in 2 processes (data-parallel)" in (double / "README.md").read_text()


def test_two_processes_train_like_one(runs: dict, synthetic_test: tuple[list[str], list[str]]) -> None:
    one, two = (json.loads((runs[k] / "metrics.json").read_text()) for k in ("single", "double"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["steps"] == one["steps"] and two["best_step"] == one["best_step"] > 0  # a trained state is kept
    assert two["stopped_early"] and one["stopped_early"]  # both processes stopped at the step one process did
    assert two["train_samples"] == one["train_samples"] == runs["train_rows"]
    assert [h["step"] for h in two["history"]] == [h["step"] for h in one["history"]]
    for a, b in zip(one["history"], two["history"]):
        assert a["val_accuracy"] == b["val_accuracy"]
    np.testing.assert_allclose([p[1] for p in two["loss_curve"]], [p[1] for p in one["loss_curve"]], atol=1e-5)
    texts = synthetic_test[0]
    p_one = Classifier.load(runs["single"]).predict_proba(texts)
    p_two = Classifier.load(runs["double"]).predict_proba(texts)
    assert np.abs(p_one - p_two).max() < PROBABILITY_TOLERANCE


def test_sharded_prediction_matches_one_process(runs: dict, tmp_path: Path,
                                                synthetic_test: tuple[list[str], list[str]]) -> None:
    texts = synthetic_test[0]
    source = write_table(tmp_path / "texts.csv", {"text": texts})
    single, double = tmp_path / "single.jsonl", tmp_path / "double.jsonl"
    main(["predict", str(runs["double"]), "--input", str(source), "--output", str(single), "--no-progress"])
    # chunks of 7 rows: 4 + 3 per process, and a last chunk of 3 rows (2 + 1)
    _torchrun(["predict", str(runs["double"]), "--input", str(source), "--output", str(double), "--no-progress",
               "--chunk-rows", "7"])
    ones = [json.loads(line) for line in single.read_text().splitlines()]
    twos = [json.loads(line) for line in double.read_text().splitlines()]
    assert [r["text"] for r in twos] == texts  # one file, every row once, in input order
    assert [r["label"] for r in twos] == [r["label"] for r in ones]
    for a, b in zip(ones, twos):
        assert abs(a["score"] - b["score"]) < 1e-6


def test_two_processes_resume_after_kill_9_like_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    """kill -9 a two-process run after a checkpoint; --resume under the same launcher ends where the
    uninterrupted two-process run does, with dropout on: the checkpoint holds every process's RNG state, so
    each one continues its own dropout draws (rank 1 used to continue from rank 0's)."""
    texts, labels = make_texts(40, seed=7)
    train = write_table(tmp_path / "train.csv", {"text": texts, "label": labels})
    # 108 training rows, global batch 4 (2 per process): 27 steps per epoch, 2 epochs; checkpoints every 5 steps
    args = ["train", str(train), "--model", str(tiny_model_dir), "--no-progress", "--precision", "fp32",
            "--epochs", "2", "--min-steps", "0", "--batch-size", "4", "--learning-rate", "3e-3", "--eval-every", "20",
            "--patience", "0", "--checkpoint-every", "5", "--seed", "1", "--lora-dropout", "0.1"]
    reference, out = tmp_path / "reference", tmp_path / "run"
    _torchrun([*args, "--out", str(reference)])
    newest = kill_after_checkpoint([*TORCHRUN, "2", "-m", "lorafit", *args, "--out", str(out)],
                                   child_env(hide_gpus=True), out, 10)
    assert 10 <= newest < 54
    _torchrun([*args, "--out", str(out), "--resume"])
    ours, theirs = adapter_weights(out), adapter_weights(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:  # part of the run in other processes, same thread count: equal within 1e-6
        assert torch.allclose(ours[name], theirs[name], rtol=0, atol=1e-6), name
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (out, reference)]
    assert metrics[0]["validation"] == metrics[1]["validation"] and metrics[0]["best_step"] == metrics[1]["best_step"]


@pytest.mark.parametrize("gpus", [1, 2])
def test_more_processes_than_gpus_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
    """Under NCCL each process takes the GPU of its local rank: two processes on one GPU would stop with CUDA's
    "invalid device ordinal". Every process refuses first, saying what to do; two GPUs are enough."""
    from lorafit import distributed
    from lorafit.errors import ConfigError

    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "0", "RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if gpus == 1:
        with pytest.raises(ConfigError, match=r"2 processes .* 1 CUDA GPU.*--nproc_per_node 1.*CUDA_VISIBLE_DEVICES="):
            distributed.check_gpus()
    else:
        distributed.check_gpus()
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: nothing to check
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    distributed.check_gpus()
