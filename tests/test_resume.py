"""Checkpoints and --resume: an interrupted run continues to exactly the result of an uninterrupted one.

The in-process tests interrupt training with a KeyboardInterrupt raised from the progress callback at a
chosen step; ``test_sigkill_mid_epoch_then_resume`` kills a real ``lorafit train`` process.
"""
from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import adapter_weights, child_env, kill_after_checkpoint, make_texts, write_table
from lorafit import Classifier, ConfigError, RunDirError
from lorafit.checkpoint import CHECKSUMS, TENSORS, checkpoint_dir
from lorafit.cli import main
from lorafit.training import Callback

# 81 training rows after the 10% split: 6 steps per epoch; evaluation every 5 steps; checkpoints every 4.
SETTINGS = dict(epochs=3, min_steps=0, batch_size=14, learning_rate=5e-3, precision="fp32", seed=3, patience=3,
                eval_every=5, checkpoint_every=4, eval_batch_size=64, lora_dropout=0.1)


class InterruptAt(Callback):
    """Raises KeyboardInterrupt (Ctrl-C) right after optimisation step ``step``; collects messages."""

    def __init__(self, step: int | None = None) -> None:
        self.step, self.messages = step, []

    def on_step(self, step: int, loss: float) -> None:
        if step == self.step:
            raise KeyboardInterrupt

    def on_info(self, message: str) -> None:
        self.messages.append(message)


def _trainable(clf: Classifier) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in clf.model.named_parameters() if p.requires_grad}


def _outcome(clf: Classifier) -> dict:
    """What must not depend on an interruption: metrics, history, temperature (timings aside)."""
    history = [{k: v for k, v in h.items()} for h in clf.metrics_["history"]]
    return {"validation": clf.metrics_["validation"], "best_step": clf.metrics_["best_step"],
            "steps": clf.metrics_["steps"], "stopped_early": clf.metrics_["stopped_early"], "history": history,
            "temperature": clf.temperature}


def _fit(tiny_model: str, data, checkpoints: Path | None = None, resume: bool = False, stop_at: int | None = None,
         **changes: object) -> tuple[Classifier, InterruptAt]:
    callback = InterruptAt(stop_at)
    clf = Classifier(model=tiny_model, **{**SETTINGS, **changes})
    clf.fit(*data, callback=callback, checkpoint_dir=checkpoints, resume=resume)
    return clf, callback


def _interrupt(tiny_model: str, data, checkpoints: Path, step: int, **changes: object) -> None:
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_model, data, checkpoints, stop_at=step, **changes)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], list[str]]:
    return make_texts(30, seed=4)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model: str, data) -> Classifier:
    clf, _ = _fit(tiny_model, data)
    return clf


def _assert_same(resumed: Classifier, reference: Classifier) -> None:
    assert _outcome(resumed) == _outcome(reference)
    ours, theirs = _trainable(resumed), _trainable(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:  # same thread count, same operations: bit for bit
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.parametrize("stop_at", [7, 11, 14])
def test_resume_after_ctrl_c_gives_the_uninterrupted_result(tiny_model: str, data, uninterrupted: Classifier,
                                                           tmp_path: Path, stop_at: int) -> None:
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, stop_at)
    kept = sorted(p.name for p in checkpoints.iterdir())
    newest = stop_at // 4 * 4
    assert kept == [f"step-{s:08d}" for s in (newest - 4, newest) if s > 0]

    resumed, callback = _fit(tiny_model, data, checkpoints, resume=True)
    assert any(f"resuming from the checkpoint of step {newest}" in m for m in callback.messages)
    _assert_same(resumed, uninterrupted)


@pytest.mark.parametrize("setting,value", [("wise_alpha", 0.5), ("ema_decay", 0.8)])
def test_resume_keeps_the_start_and_the_moving_average(tiny_model: str, data, tmp_path: Path, setting: str,
                                                       value: float) -> None:
    """What the checkpoint must carry besides the trained weights: the probe start that ``wise_alpha``
    interpolates towards (a resumed run does not fit the probe again), and the moving average of the weights
    (``ema_decay``). A resumed run ends where the uninterrupted one does."""
    reference, _ = _fit(tiny_model, data, **{setting: value})
    assert reference.metrics_[setting] == value
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, 10, **{setting: value})
    resumed, callback = _fit(tiny_model, data, checkpoints, resume=True, **{setting: value})
    assert any("resuming from the checkpoint of step 8" in m for m in callback.messages)
    _assert_same(resumed, reference)
    assert resumed.metrics_["wise_validation"] == reference.metrics_["wise_validation"]


def test_a_torn_checkpoint_is_skipped_for_the_one_before(tiny_model: str, data, uninterrupted: Classifier,
                                                        tmp_path: Path) -> None:
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, 10)
    torn = checkpoints / "step-00000008" / TENSORS
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])  # power loss mid-write

    resumed, callback = _fit(tiny_model, data, checkpoints, resume=True)
    assert any("step-00000008 is torn or damaged" in m and "checksum" in m for m in callback.messages)
    assert any("checkpoint of step 4" in m for m in callback.messages)
    _assert_same(resumed, uninterrupted)


def test_a_checkpoint_without_checksums_is_skipped(tiny_model: str, data, tmp_path: Path) -> None:
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, 10)
    for path in checkpoints.iterdir():
        (path / CHECKSUMS).unlink()
    _, callback = _fit(tiny_model, data, checkpoints, resume=True, epochs=1)
    assert sum("never finished" in m for m in callback.messages) == 2
    assert any("no intact checkpoint" in m and "starting from the beginning" in m for m in callback.messages)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny_model: str, data, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def save_file(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    checkpoints = tmp_path / "run.partial"
    with pytest.raises(RunDirError, match=r"step 8 .*the disk is full.*step 4 is kept.*--resume"):
        _fit(tiny_model, data, checkpoints)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000004"]  # no temporary left behind
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    _, callback = _fit(tiny_model, data, checkpoints, resume=True)
    assert any("checkpoint of step 4" in m for m in callback.messages)


@pytest.mark.parametrize("change,named", [({"learning_rate": 1e-3}, "learning_rate"), ({"r": 4}, "lora.r")])
def test_resume_refuses_other_settings(tiny_model: str, data, tmp_path: Path, change: dict, named: str) -> None:
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, 5)
    with pytest.raises(ConfigError, match=rf"another training command: .*{named}.*--overwrite"):
        _fit(tiny_model, data, checkpoints, resume=True, **change)


def test_resume_refuses_other_data_but_accepts_another_checkpoint_interval(tiny_model: str, data,
                                                                          tmp_path: Path) -> None:
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, 5)
    texts, labels = data
    with pytest.raises(ConfigError, match="data_hash"):
        _fit(tiny_model, (texts[:-1] + ["a different text"], labels), checkpoints, resume=True)
    _fit(tiny_model, data, checkpoints, resume=True, epochs=3, checkpoint_every="epoch")


def test_save_removes_the_checkpoints_of_a_completed_run(tiny_model: str, data, tmp_path: Path) -> None:
    checkpoints = tmp_path / "run.partial"
    clf, _ = _fit(tiny_model, data, checkpoints, epochs=1)
    assert (checkpoints / "step-00000004").is_dir()
    clf.save(tmp_path / "run")
    assert not checkpoints.exists() and (tmp_path / "run" / "lorafit.json").is_file()


def _cli_args(train: Path, out: Path, model: str, *extra: str) -> list[str]:
    return ["train", str(train), "--out", str(out), "--model", model, "--no-progress", "--precision", "fp32",
            "--epochs", "2", "--min-steps", "0", "--batch-size", "8", "--learning-rate", "5e-3", *extra]


def test_cli_refuses_to_start_over_checkpoints_without_resume_or_overwrite(tiny_model: str, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    train = write_table(tmp_path / "train.csv", dict(zip(("text", "label"), make_texts(10, seed=5))))
    out = tmp_path / "run"
    checkpoint_dir(out).mkdir()
    (checkpoint_dir(out) / "step-00000003").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(_cli_args(train, out, tiny_model))
    assert exit_info.value.code == 1
    assert "holds the checkpoints of an interrupted run; pass --resume" in capsys.readouterr().err
    assert not out.exists()
    main(_cli_args(train, out, tiny_model, "--overwrite", "--checkpoint-every", "2"))
    assert (out / "lorafit.json").is_file() and not checkpoint_dir(out).exists()


def test_cli_resume_without_checkpoints_starts_from_the_beginning(tiny_model: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    train = write_table(tmp_path / "train.csv", dict(zip(("text", "label"), make_texts(10, seed=5))))
    main(_cli_args(train, tmp_path / "run", tiny_model, "--resume"))
    assert "no checkpoints in" in capsys.readouterr().err
    assert (tmp_path / "run" / "lorafit.json").is_file()


# ------------------------------------------------------------------------------- a real kill -9
def test_sigkill_mid_epoch_then_resume(tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """kill -9 a real `lorafit train` after its second checkpoint; --resume ends where an uninterrupted run does."""
    texts, labels = make_texts(80, seed=7)
    train = write_table(tmp_path / "train.csv", {"text": texts, "label": labels})
    # 216 training rows, batch 4: 54 steps per epoch, checkpoints every 5 steps (mid-epoch), 2 epochs.
    args = ["--model", tiny_model, "--no-progress", "--precision", "fp32", "--epochs", "2", "--min-steps", "0",
            "--batch-size", "4", "--learning-rate", "3e-3", "--eval-every", "20", "--patience", "0",
            "--checkpoint-every", "5", "--seed", "1"]
    reference = tmp_path / "reference"
    main(["train", str(train), "--out", str(reference), *args])

    out = tmp_path / "run"
    newest = kill_after_checkpoint([sys.executable, "-m", "lorafit", "train", str(train), "--out", str(out), *args],
                                   child_env(), out, 10)
    assert 10 <= newest < 2 * 54 and newest % 54  # killed mid-epoch, before the end

    main(["train", str(train), "--out", str(out), *args, "--resume"])  # in this process: one thread too
    assert f"resuming from the checkpoint of step {newest}" in capsys.readouterr().err.replace("\n", " ")
    assert not checkpoint_dir(out).exists()
    ours, theirs = adapter_weights(out), adapter_weights(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:  # part of the run in another process, same thread count: equal within 1e-6
        assert torch.allclose(ours[name], theirs[name], rtol=0, atol=1e-6), name
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (out, reference)]
    assert metrics[0]["validation"] == metrics[1]["validation"]
    assert metrics[0]["best_step"] == metrics[1]["best_step"]


def test_resume_keeps_the_fp16_loss_scale(tiny_model: str, data, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 training multiplies the loss by a scale that GradScaler grows, and halves after an overflow (that
    step is skipped). A resumed run carries on with the checkpoint's scale, so it skips the same steps and ends
    where the uninterrupted run does. fp16 runs here on the CPU, where lorafit refuses it only for speed; the
    scale grows at every step, so overflows (and a lost scale) show within a short run."""
    scalers, real = [], torch.amp.GradScaler

    def scaler(device: str, enabled: bool) -> torch.amp.GradScaler:
        scalers.append(real(device, growth_interval=1, enabled=enabled))
        return scalers[-1]

    monkeypatch.setattr("lorafit.training.resolve_precision", lambda precision, device: precision)
    monkeypatch.setattr("lorafit.training.matmul_peak_gflops", lambda *args: 1.0)
    monkeypatch.setattr(torch.amp, "GradScaler", scaler)
    reference, _ = _fit(tiny_model, data, precision="fp16")
    final_scale = scalers[-1].get_scale()
    assert final_scale < 2.0 ** 16 * 2 ** reference.metrics_["steps"]  # some step overflowed and was skipped
    checkpoints = tmp_path / "run.partial"
    _interrupt(tiny_model, data, checkpoints, 10, precision="fp16")
    resumed, _ = _fit(tiny_model, data, checkpoints, resume=True, precision="fp16")
    assert scalers[-1].get_scale() == final_scale
    _assert_same(resumed, reference)
