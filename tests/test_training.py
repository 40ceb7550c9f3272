"""lorafit.training: the loop, periodic evaluation, early stopping with best-checkpoint restore, metrics."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import LABELS, make_texts
from lorafit.config import MIN_STEPS_MAX_EPOCHS, LoraSettings, TrainConfig
from lorafit.data import tokenize
from lorafit.errors import ConfigError
from lorafit.inference import bf16_supported, resolve_precision
from lorafit.models import build_classifier, load_encoder
from lorafit.training import Callback, Trainer


def _trainer(tiny_model: str, n_per_class: int = 20, callback: Callback | None = None, **settings: object):
    """A Trainer on fresh LoRA + head, with encoded train/validation data."""
    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(), tiny_model)
    config = TrainConfig(model=tiny_model, **{"precision": "fp32", "learning_rate": 5e-3, "batch_size": 8,
                                              "min_steps": 0, **settings})
    texts, labels = make_texts(n_per_class, seed=0)
    val_texts, val_labels = make_texts(3, seed=1)
    data = (tokenize(tokenizer, texts, 64), np.array([LABELS.index(x) for x in labels]),
            tokenize(tokenizer, val_texts, 64), np.array([LABELS.index(x) for x in val_labels]), len(LABELS))
    return Trainer(model, config, tokenizer.pad_token_id, callback), data


def _scripted_evaluate(trainer: Trainer, scores: list[float], snapshots: list[dict],
                       margins: list[float] | None = None) -> None:
    """Make ``trainer.evaluate`` return ``scores`` in turn, and record the trainable state at each call.

    The logits of call i are ``i`` everywhere, plus ``margins[i]`` on each row's true class (a higher margin
    is a lower validation loss), so a test can tell which evaluation's logits were kept.
    """
    calls = iter(scores)

    def evaluate(encoded, label_ids, n_labels):
        snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
        value, i = next(calls), len(snapshots) - 1
        logits = np.full((len(label_ids), n_labels), float(i), dtype=np.float32)
        logits[np.arange(len(label_ids)), label_ids] += margins[i] if margins else 0.0
        return {"accuracy": value, "macro_f1": value}, logits

    trainer.evaluate = evaluate


@pytest.mark.parametrize("patience,scores,stop_at", [(1, [0.5, 0.9, 0.4, 0.95, 0.99, 0.99], 3),
                                                     (2, [0.5, 0.9, 0.4, 0.3, 0.99, 0.99], 4)])
def test_early_stopping_restores_the_best_checkpoint(tiny_model: str, patience: int, scores: list[float],
                                                     stop_at: int) -> None:
    trainer, data = _trainer(tiny_model, epochs=6, patience=patience, probe_init=False)
    snapshots: list[dict] = []
    _scripted_evaluate(trainer, scores, snapshots)
    result = trainer.fit(*data)
    steps_per_epoch = math.ceil(len(data[0]) / 8)

    assert result.stopped_early
    assert len(result.history) == stop_at and len(snapshots) == stop_at
    assert result.steps == stop_at * steps_per_epoch < 6 * steps_per_epoch
    assert result.best_metric == 0.9 and result.best_step == 2 * steps_per_epoch and result.best_epoch == 2.0
    assert np.all(result.val_logits == 1.0)  # the best evaluation's logits, for calibration
    assert "val_logits" not in result.to_dict()
    final = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert final.keys() == snapshots[1].keys()
    for name, value in final.items():
        assert torch.equal(value, snapshots[1][name]), name
    # Training did move the weights after the best evaluation, so the restore is what put them back.
    assert any(not torch.equal(snapshots[1][n], snapshots[-1][n]) for n in final)


def test_a_tie_goes_to_the_lower_validation_loss_without_resetting_patience(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=5, patience=2, probe_init=False)
    snapshots: list[dict] = []
    _scripted_evaluate(trainer, [0.8, 0.8, 0.8, 0.9, 0.9], snapshots, margins=[1.0, 3.0, 2.0, 0.0, 0.0])
    result = trainer.fit(*data)
    steps_per_epoch = math.ceil(len(data[0]) / 8)
    assert result.stopped_early and len(result.history) == 3  # the two ties counted as evaluations without progress
    assert result.best_step == 2 * steps_per_epoch
    assert result.val_logits.min() == 1.0 and result.val_logits.max() == 4.0  # the second evaluation's logits
    losses = [h["val_loss"] for h in result.history]
    assert losses[1] < losses[2] < losses[0]
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), snapshots[1][name])


@pytest.mark.parametrize("margins,kept_eval", [([0.0, 2.0, 3.0], 1),   # a fine-tuned one has the lower loss
                                              ([3.0, 1.0, 2.0], 0)])  # the probe leads on both: kept
def test_the_probe_head_is_kept_only_while_no_fine_tuned_checkpoint_has_a_lower_loss(
        tiny_model: str, margins: list[float], kept_eval: int) -> None:
    """Step 0 (the probe head) scores best on accuracy; a fine-tuned checkpoint with a lower validation loss
    replaces it anyway, and later ones then compete on accuracy as usual (the third, lower, is not kept)."""
    trainer, data = _trainer(tiny_model, epochs=2, patience=0, probe_init=True)
    snapshots: list[dict] = []
    _scripted_evaluate(trainer, [0.9, 0.88, 0.87], snapshots, margins=margins)
    result = trainer.fit(*data)
    steps_per_epoch = math.ceil(len(data[0]) / 8)
    assert [h["step"] for h in result.history] == [0, steps_per_epoch, 2 * steps_per_epoch]
    assert result.best_step == kept_eval * steps_per_epoch
    assert result.best_metric == [0.9, 0.88][kept_eval]
    assert result.val_logits.min() == kept_eval  # that evaluation's logits, for calibration
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), snapshots[kept_eval][name])


def test_patience_zero_never_stops_but_still_restores_the_best(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=3, patience=0, probe_init=False)
    snapshots: list[dict] = []
    _scripted_evaluate(trainer, [0.8, 0.2, 0.1], snapshots)
    result = trainer.fit(*data)
    assert not result.stopped_early and len(result.history) == 3
    assert result.best_epoch == 1.0
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), snapshots[0][name])


def test_eval_every_steps(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=2, eval_every="3", patience=0, probe_init=False)
    result = trainer.fit(*data)
    total = 2 * math.ceil(60 / 8)  # 16 steps
    steps = [h["step"] for h in result.history]
    assert steps == [3, 6, 9, 12, 15, 16]  # every 3 steps, and once at the end
    assert all(s % 3 == 0 for s in steps[:-1]) and steps[-1] == total == result.steps
    assert [h["epoch"] for h in result.history] == [round(s / 8, 3) for s in steps]
    assert all(h["train_loss"] is not None and h["train_loss"] > 0 for h in result.history)


def test_probe_start_is_evaluated_at_step_zero(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=1, patience=0, probe_init=True)
    result = trainer.fit(*data)
    assert [h["step"] for h in result.history] == [0, 8]
    assert result.history[0]["train_loss"] is None and result.history[0]["epoch"] == 0.0


def test_without_validation_every_step_runs_and_the_last_state_is_kept(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=3, patience=1, probe_init=True)
    trainer.evaluate = lambda *a: pytest.fail("nothing to evaluate without validation data")
    result = trainer.fit(data[0], data[1], None, None, data[4])
    assert result.steps == 3 * math.ceil(60 / 8) and not result.stopped_early
    assert result.best_step == result.steps and result.best_metric is None
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert all(set(h) == {"step", "epoch", "train_loss"} for h in result.history)


def test_min_steps_adds_epochs_on_small_data(tiny_model: str) -> None:
    messages: list[str] = []

    class Recorder(Callback):
        def on_info(self, message: str) -> None:
            messages.append(message)

    trainer, data = _trainer(tiny_model, callback=Recorder(), epochs=1, min_steps=20, patience=0, probe_init=False)
    result = trainer.fit(data[0], data[1], None, None, data[4])
    assert result.epochs == 3 and result.steps == 3 * 8  # 60 rows at batch 8: 8 steps per epoch
    assert any("3 epochs instead of 1" in m and "min_steps is 20" in m for m in messages)
    trainer, data = _trainer(tiny_model, epochs=2, min_steps=5, patience=0, probe_init=False)
    assert trainer.fit(data[0], data[1], None, None, data[4]).steps == 16  # already more than min_steps
    trainer, data = _trainer(tiny_model, epochs=1, min_steps=1000, patience=0, probe_init=False)
    assert trainer.fit(data[0], data[1], None, None, data[4]).epochs == MIN_STEPS_MAX_EPOCHS  # capped


def test_training_flops_come_from_the_real_token_counts(tiny_model: str) -> None:
    from lorafit.flops import block_shape, forward_flops

    trainer, data = _trainer(tiny_model, epochs=2, patience=0, probe_init=False)
    result = trainer.fit(*data)
    hidden, ffn, blocks = block_shape(trainer.model.encoder.config)
    running = blocks - trainer.model.split
    expected = 2 * 2 * forward_flops(data[0].lengths, hidden, ffn, running).sum() / 1e12  # 2 epochs, fwd + bwd
    assert running >= 1 and np.isclose(result.train_tflops, expected, rtol=1e-9)
    assert result.loop_seconds > 0 and result.mfu > 0


def test_uncached_frozen_blocks_count_forward_only(tiny_model: str) -> None:
    from lorafit.flops import block_shape, forward_flops

    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model,
                             cache_frozen=False)
    trainer = Trainer(model, TrainConfig(model=tiny_model, precision="fp32"), tokenizer.pad_token_id)
    hidden, ffn, _ = block_shape(model.encoder.config)
    lengths = np.array([3, 10])
    expected = 2 * forward_flops(lengths, hidden, ffn, 1) + forward_flops(lengths, hidden, ffn, 1)
    np.testing.assert_allclose(trainer._row_flops(lengths), expected)


def test_training_changes_only_trainable_weights(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=1, patience=0, probe_init=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.evaluate = lambda source, y, n: ({"accuracy": 1.0, "macro_f1": 1.0}, np.zeros((len(y), n)))  # keep the final weights
    trainer.fit(*data)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any("classifier" in n for n in changed)
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it


def test_callback_hooks(tiny_model: str) -> None:
    class Recorder(Callback):
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def on_train_begin(self, total_steps: int, trainable: int, total: int) -> None:
            self.events.append(("begin", total_steps, trainable < total))

        def on_phase(self, name: str) -> None:
            self.events.append(("phase", name))

        def on_step(self, step: int, loss: float) -> None:
            self.events.append(("step", step))

        def on_evaluate(self, record: dict) -> None:
            self.events.append(("eval", record["step"]))

        def on_train_end(self, result) -> None:
            self.events.append(("end", result.steps))

    recorder = Recorder()
    trainer, data = _trainer(tiny_model, epochs=2, patience=0, probe_init=True, callback=recorder)
    trainer.fit(*data)
    kinds = [e[0] for e in recorder.events]
    phases = [e[1] for e in recorder.events if e[0] == "phase"]
    assert phases == ["cache", "probe", "train"] and ("begin", 16, True) in recorder.events
    assert [e[1] for e in recorder.events if e[0] == "step"] == list(range(1, 17))
    assert [e[1] for e in recorder.events if e[0] == "eval"] == [0, 8, 16]
    assert recorder.events[-1] == ("end", 16) and kinds.count("end") == 1


def test_bf16_training_runs_on_cpu(tiny_model: str) -> None:
    trainer, data = _trainer(tiny_model, epochs=1, patience=0, probe_init=False, precision="bf16")
    result = trainer.fit(*data)
    assert result.precision == "bf16" and result.steps == 8
    assert all(np.isfinite(h["train_loss"]) for h in result.history)


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_supported(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    cuda = torch.device("cuda")  # only the device's type is consulted, and whether it runs bf16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == "fp16"  # an older GPU: fp16, with loss scaling in training
    assert resolve_precision("fp16", cuda) == "fp16"


def test_fp16_on_a_cpu_is_refused_before_training(tiny_model: str) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU.*use bf16"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            _trainer(tiny_model, precision="fp16")


def test_fp16_scales_the_loss(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fp16 path (autocast, GradScaler) on the CPU, where lorafit refuses fp16 only for speed."""
    monkeypatch.setattr("lorafit.training.resolve_precision", lambda precision, device: precision)
    monkeypatch.setattr("lorafit.training.matmul_peak_gflops", lambda *args: 1.0)  # fp16 matmuls crawl on a CPU
    trainer, data = _trainer(tiny_model, epochs=1, patience=0, probe_init=False, precision="fp16")
    assert trainer.scaler.is_enabled()
    result = trainer.fit(*data)
    assert result.precision == "fp16" and result.steps == 8
    assert trainer.scaler.get_scale() > 1  # the loss was scaled up
    assert all(np.isfinite(h["train_loss"]) for h in result.history)
    assert not _trainer(tiny_model, precision="fp32")[0].scaler.is_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_a_gpu(tiny_model: str, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    trainer, data = _trainer(tiny_model, epochs=2, patience=0, precision=precision)
    assert trainer.device.type == "cuda" and trainer.scaler.is_enabled() == (precision == "fp16")
    result = trainer.fit(*data)
    assert result.precision == precision and result.steps == 16
    assert all(np.isfinite(h["train_loss"]) for h in result.history[1:])
    assert result.best_metric > 0.5  # three classes: better than chance


def test_metrics_json(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_samples_per_second"] > 0
    assert metrics["train_wall_seconds"] > 0
    assert metrics["peak_memory_mb"] > 10
    history = metrics["history"]
    assert [h["step"] for h in history] == [0, 6, 12, 18]  # probe, then 3 epochs of 81 rows at batch 16
    assert all({"step", "epoch", "train_loss", "val_accuracy", "val_macro_f1", "val_loss"} <= set(h) for h in history)
    best = next(h for h in history if h["step"] == metrics["best_step"])
    assert metrics["validation"] == {"accuracy": best["val_accuracy"], "macro_f1": best["val_macro_f1"],
                                     "loss": best["val_loss"]}
    assert metrics["wise_alpha"] == 1.0 and metrics["wise_validation"] is None
    assert best["val_accuracy"] == max(h["val_accuracy"] for h in history)
    assert metrics["train_samples"] == 81 and metrics["precision"] == "fp32"
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["train_tflops"] > 0 and metrics["matmul_peak_gflops"] > 0 and 0 < metrics["mfu"] < 1.5


def _trained_state(tiny_model: str, alpha: float) -> tuple[dict[str, torch.Tensor], object]:
    torch.manual_seed(0)  # the same LoRA A matrices in every run
    trainer, data = _trainer(tiny_model, epochs=2, patience=0, probe_init=True, wise_alpha=alpha)
    result = trainer.fit(*data)
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}, result


def test_wise_interpolation_moves_the_trained_weights_back_towards_the_probe_start(tiny_model: str) -> None:
    trained, as_trained = _trained_state(tiny_model, 1.0)
    start, at_start = _trained_state(tiny_model, 0.0)
    half, halfway = _trained_state(tiny_model, 0.5)
    assert as_trained.wise_alpha == 1.0 and as_trained.wise_validation is None
    lora_b = [n for n in trained if ".lora_B." in n]
    lora_a = [n for n in trained if ".lora_A." in n]
    head = [n for n in trained if ".lora_" not in n]
    assert lora_b and lora_a and head
    assert any(trained[n].abs().max() > 0 for n in lora_b)  # training moved LoRA
    for name in lora_b:  # LoRA's B starts at zero: its update is scaled by alpha
        assert torch.count_nonzero(start[name]) == 0
        torch.testing.assert_close(half[name], 0.5 * trained[name])
    for name in lora_a:  # A keeps its trained value, so B @ A is alpha times LoRA's change
        assert torch.equal(half[name], trained[name]) and torch.equal(start[name], trained[name])
    for name in head:
        assert not torch.equal(start[name], trained[name])
        torch.testing.assert_close(half[name], 0.5 * (start[name] + trained[name]))
    # alpha 0 gives back the probe: its validation scores are those of the step-0 evaluation
    probe = at_start.history[0]
    assert at_start.wise_validation["interpolated"]["accuracy"] == probe["val_accuracy"]
    assert at_start.wise_validation["interpolated"]["loss"] == pytest.approx(probe["val_loss"], rel=1e-5)
    assert halfway.wise_validation["trained"]["accuracy"] == as_trained.best_metric
    assert halfway.best_metric == halfway.wise_validation["interpolated"]["accuracy"]


def _raw_weights_after_each_step(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Record the trained (not averaged) weights right after every optimisation step."""
    raw: list[dict[str, torch.Tensor]] = []
    step = trainer._step

    def recording(*args, **kwargs):
        loss = step(*args, **kwargs)
        raw.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
        return loss

    trainer._step = recording
    return raw


def test_the_moving_average_is_what_training_keeps(tiny_model: str) -> None:
    torch.manual_seed(0)
    trainer, data = _trainer(tiny_model, epochs=2, patience=0, probe_init=False, ema_decay=0.8)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    messages: list[str] = []
    trainer.callback.on_info = messages.append
    raw = _raw_weights_after_each_step(trainer)
    result = trainer.fit(data[0], data[1], None, None, data[4])  # no validation data: the last average is kept
    assert result.ema_decay == 0.8 and len(raw) == result.steps == 16
    assert any("exponential moving average with decay 0.8 " in m for m in messages)
    final = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    for name, begin in start.items():
        # the average starts from the weights as training starts
        expected = begin.clone()
        for weights in raw:
            expected = 0.8 * expected + 0.2 * weights[name]
        torch.testing.assert_close(final[name], expected)
        if ".lora_B." in name or ".lora_" not in name:
            assert not torch.allclose(final[name], raw[-1][name])  # not the weights as trained


def test_evaluations_score_the_average_and_leave_training_untouched(tiny_model: str) -> None:
    """With validation data every evaluation scores (and may keep) the averaged weights, and the trained
    weights carry on exactly as without averaging."""
    runs = {}
    for decay in (0.0, 0.7):
        torch.manual_seed(0)
        trainer, data = _trainer(tiny_model, epochs=3, patience=0, probe_init=False, ema_decay=decay)
        snapshots: list[dict] = []
        _scripted_evaluate(trainer, [0.5, 0.9, 0.4], snapshots)
        start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        raw = _raw_weights_after_each_step(trainer)
        result = trainer.fit(*data)
        runs[decay] = raw, snapshots, result, trainer, start
    (plain, plain_evals, plain_result, _, _), (raw, evals, result, trainer, start) = runs[0.0], runs[0.7]
    assert plain_result.ema_decay == 0.0 and result.ema_decay == 0.7
    for ours, theirs in zip(raw, plain, strict=True):  # the same trajectory, step for step
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), name
    steps_per_epoch = len(raw) // 3
    for evaluated, snapshot in zip(plain_evals, (plain[steps_per_epoch * k - 1] for k in (1, 2, 3))):
        assert all(torch.equal(evaluated[n], snapshot[n]) for n in snapshot)  # off: the weights as trained
    average = {n: v.clone() for n, v in start.items()}
    for step, weights in enumerate(raw, 1):  # on: each evaluation scored the average at its step
        average = {n: 0.7 * average[n] + 0.3 * weights[n] for n in average}
        if step % steps_per_epoch == 0:
            for name, value in evals[step // steps_per_epoch - 1].items():
                torch.testing.assert_close(value, average[name])
    lora_b = [n for n in raw[0] if ".lora_B." in n]
    assert all(not torch.equal(evals[1][n], raw[2 * steps_per_epoch - 1][n]) for n in lora_b)  # not the trained
    final = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert result.best_epoch == 2.0
    for name in final:  # the best evaluation's averaged weights are the ones kept
        assert torch.equal(final[name], evals[1][name])


def test_auto_decay_follows_the_planned_steps() -> None:
    from lorafit.averaging import resolve_decay

    assert resolve_decay("auto", 564) == pytest.approx(1 - 3 / 564)  # a third of the steps
    assert resolve_decay("auto", 60) == pytest.approx(0.95)
    assert resolve_decay("auto", 3790) == pytest.approx(0.995)  # at most 200 steps
    assert resolve_decay("auto", 2) == 0.0  # too short a run to average anything
    assert resolve_decay(0.99, 564) == 0.99 and resolve_decay(0.0, 564) == 0.0
