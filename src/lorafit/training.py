"""The training loop: probe-initialised head, length-bucketed batches, bf16/fp16 autocast, periodic
evaluation, early stopping and restoring the best checkpoint. Runs through Accelerate.

Under ``torchrun`` / ``accelerate launch`` every process draws the same global batches (same seed) and
trains on its own slice of each (see :meth:`Trainer._step`): the model is wrapped in
DistributedDataParallel, gradients are averaged across processes, and the step equals a single-process
step on the whole batch. Validation is split between the processes and its logits gathered, so every
process scores the same numbers; the early-stopping decision is rank 0's, broadcast.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lorafit import distributed
from lorafit.averaging import WeightAverage, resolve_decay
from lorafit.batching import bucketed_batches, pad_multiple
from lorafit.config import MIN_STEPS_MAX_EPOCHS, TrainConfig, selection_metric
from lorafit.data import Encoded
from lorafit.errors import RunDirError
from lorafit.cache import adapters_off, base_pass, build_cache
from lorafit.dropout import use_fast_dropout
from lorafit.checkpoint import Checkpoints, TrainingState, load_optimizer, numpy_state, optimizer_tensors, \
    restore_rng, rng_entries, rng_snapshot
from lorafit.flops import BACKWARD_FACTOR, block_shape, forward_flops, matmul_peak_gflops
from lorafit.memory import bound_heap, peak_memory_mb, release_free_memory
from lorafit.inference import INFERENCE_PRECISION, autocast, forward_all, resolve_precision, token_batches
from lorafit.models import LoraClassifier, count_parameters
from lorafit.probe import init_head
from lorafit.strategy import resolve_epochs
from lorafit.tasks import SingleLabel

logger = logging.getLogger(__name__)


TRIM_EVERY = 10
"""Optimisation steps between returns of freed heap memory to the OS (see :mod:`lorafit.memory`)."""
ESTIMATE_STEPS = 8
"""Steps timed for the training-time estimate (the median rate counts, so a step that pays for building
kernels for a new batch shape does not skew it); the first step (one-off set-up costs) is not timed."""
LOSS_POINTS = 200
"""Points of the training-loss curve kept in ``metrics.json`` (the loss is averaged in windows)."""


class Callback:
    """Hooks the CLI uses to show progress; the library itself only logs."""

    def on_train_begin(self, total_steps: int, trainable: int, total: int) -> None: ...
    def on_phase(self, name: str) -> None: ...
    def on_info(self, message: str) -> None: ...
    def on_step(self, step: int, loss: float) -> None: ...
    def on_evaluate(self, record: dict) -> None: ...
    def on_estimate(self, seconds: float, measured_steps: int) -> None: ...
    def on_data_check(self, check) -> None: ...
    def on_train_end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    """What happened during training: the evaluation history and where the best checkpoint came from."""

    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int = 0
    best_epoch: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    precision: str = "fp32"
    trainable_parameters: int = 0
    total_parameters: int = 0
    train_samples: int = 0
    train_seconds: float = 0.0
    train_samples_per_second: float = 0.0
    prepare_seconds: float = 0.0
    """Caching frozen blocks and fitting the probe head, before the first optimisation step."""
    cached_layers: int = 0
    """Bottom encoder blocks computed once and cached (0: none)."""
    epochs: int = 0
    """Epochs planned: ``epochs``, or more to reach ``min_steps``."""
    strategy: str = ""
    """Which blocks train and which are cached, in words."""
    peak_memory_mb: float = 0.0
    loop_seconds: float = 0.0
    """Time spent in optimisation steps (evaluations excluded)."""
    train_tflops: float = 0.0
    """Model FLOPs of the optimisation steps, from the real token counts (see :mod:`lorafit.flops`)."""
    matmul_peak_gflops: float = 0.0
    """Best square-matmul rate in the training precision, measured before and after training in this run."""
    mfu: float = 0.0
    """Model FLOPs utilisation of the optimisation steps: ``train_tflops / loop_seconds`` over the peak
    (of all ``world_size`` devices together)."""
    world_size: int = 1
    """Processes that trained together (``torchrun`` / ``accelerate launch``); 1: a single process."""
    val_logits: np.ndarray | None = field(default=None, repr=False)
    """Validation logits (fp32) of the kept checkpoint, for calibration; not part of ``to_dict``."""
    estimated_train_seconds: float | None = None
    """``train_seconds`` as estimated after the first few optimisation steps (from their timing)."""
    loss_curve: list[list[float]] = field(default_factory=list)
    """``[step, mean training loss]`` pairs, about ``LOSS_POINTS`` of them over the whole run."""
    ema_decay: float = 0.0
    """Decay of the moving average of the weights that evaluations scored and training kept (0: none)."""
    wise_alpha: float = 1.0
    """The weight of the trained state against the probe-initialised start (``TrainConfig.wise_alpha``)."""
    wise_validation: dict | None = None
    """Validation scores (and ``loss``) of the kept checkpoint ``trained`` (as in the history at ``best_step``)
    and ``interpolated``; None without validation data or interpolation."""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "val_logits"}

    def checkpoint_validation(self) -> dict:
        """Validation scores (and ``loss``) of the kept checkpoint as trained: the history's record at
        ``best_step`` (empty without validation data)."""
        best = next((h for h in self.history if h["step"] == self.best_step), {})
        return {k[4:]: v for k, v in best.items() if k.startswith("val_")}

    def kept_validation(self) -> dict:
        """Validation scores of the model training returns: the interpolated one after WiSE-FT, else the
        kept checkpoint's."""
        return self.wise_validation["interpolated"] if self.wise_validation else self.checkpoint_validation()


_RESUMED_COUNTERS = ("history", "stopped_early", "loop_seconds", "train_tflops", "prepare_seconds",
                     "matmul_peak_gflops")
"""TrainResult fields a checkpoint carries over (``train_seconds`` is added up separately)."""


@dataclass
class _Loop:
    """Where the training loop is: steps and rows done, position in the epoch, losses since the last evaluation."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    seen: int = 0
    losses: list[float] = field(default_factory=list)


@dataclass
class _Best:
    metric: float = -math.inf
    step: int = 0
    epoch: float = 0.0
    state: dict = field(default_factory=dict)
    bad_evals: int = 0
    logits: np.ndarray | None = None
    loss: float = math.inf


REMEASURE_PEAK_AFTER_S = 30.0
"""The matmul peak behind ``mfu`` is measured again after training loops longer than this (seconds)."""


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (a :func:`_trainable_state`, on any device) into the model's parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _interpolated(name: str) -> bool:
    """Whether WiSE interpolation moves this trainable parameter: all but LoRA's A matrices, whose update is
    scaled through B (``B`` starts at zero, so ``alpha * B @ A`` is ``alpha`` times LoRA's change)."""
    return ".lora_A." not in name


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float):
    warmup = int(round(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Clock:
    """Times the first steps to estimate the training time, and averages the loss into a short curve.

    The estimate of the whole training time is the time so far (loading, caching, probe, first steps)
    plus the median seconds per FLOP of the timed steps (from the real token counts of their batches,
    so short and long batches weigh right) times the FLOPs of the steps and evaluations still to come.
    """

    def __init__(self, total_steps: int, planned_flops: float, started: float, callback: Callback) -> None:
        self.planned_flops, self.started, self.callback = planned_flops, started, callback
        self.window = max(1, math.ceil(total_steps / LOSS_POINTS))
        self.done = 0.0
        self.rates: list[float] = []
        self.estimate: float | None = None
        self.curve: list[list[float]] = []
        self._losses: list[float] = []

    def step(self, step: int, seconds: float, flops: float, loss: float) -> None:
        """Account for optimisation step number ``step`` (1-based)."""
        self.done += flops
        if 1 < step <= ESTIMATE_STEPS + 1 and flops > 0:
            self.rates.append(seconds / flops)
            if step == ESTIMATE_STEPS + 1:
                remaining = max(0.0, self.planned_flops - self.done)
                self.estimate = time.perf_counter() - self.started + float(np.median(self.rates)) * remaining
                logger.info("estimated training time %.0f s (from %d timed steps)", self.estimate, len(self.rates))
                self.callback.on_estimate(self.estimate, len(self.rates))
        self._losses.append(loss)
        if len(self._losses) == self.window:
            self.flush(step)

    def flush(self, step: int) -> None:
        """Close the current window of the loss curve at ``step``."""
        if self._losses:
            self.curve.append([step, float(np.mean(self._losses))])
            self._losses = []


def _blocks(indices) -> str:
    """``block 5``, ``blocks 4, 5`` or, for a run from 0, ``blocks 0-3``."""
    indices = list(indices)
    if len(indices) == 1:
        return f"block {indices[0]}"
    if len(indices) > 2 and indices == list(range(indices[-1] + 1)):
        return f"blocks 0-{indices[-1]}"
    return f"blocks {', '.join(map(str, indices))}"


@dataclass
class Source:
    """Training or validation inputs: row lengths and a function that builds the batch of given rows."""

    lengths: np.ndarray
    make_batch: Callable[[np.ndarray], dict[str, torch.Tensor]]

    def __len__(self) -> int:
        return len(self.lengths)


class Trainer:
    """Fits a :class:`LoraClassifier` on encoded data. One instance per training run."""

    def __init__(self, model: LoraClassifier, config: TrainConfig, pad_id: int,
                 callback: Callback | None = None, class_weights: np.ndarray | None = None,
                 checkpoints: Checkpoints | None = None, task: SingleLabel | None = None) -> None:
        from accelerate import Accelerator

        self.config = config
        self.task = task or SingleLabel()
        """Loss, metrics and probe of what is learnt (:mod:`lorafit.tasks`)."""
        self.metric = selection_metric(config)
        self.checkpoints = checkpoints
        self.pad_id = pad_id
        self.callback = callback if callback is not None and distributed.is_main() else Callback()
        cuda = torch.cuda.is_available()
        self.precision = resolve_precision(config.precision, torch.device("cuda" if cuda else "cpu"))
        # lorafit's precision decides, not `accelerate launch --mixed_precision` (autocast is ours, see _step)
        distributed.check_gpus()
        self.accelerator = Accelerator(cpu=not cuda, mixed_precision="no")
        self.device = self.accelerator.device
        # fp16 gradients underflow without loss scaling; for other precisions the scaler is a no-op. (Not
        # Accelerator(mixed_precision="fp16"): its state is one per process, fixed by the first Trainer.)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.model = model.to(self.device)
        if config.fast_dropout:
            use_fast_dropout(self.model)
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32,
                                                                                device=self.device)

    def describe(self) -> str:
        """The training strategy in words: which blocks carry LoRA, which are frozen and cached."""
        layers = self.model.lora_settings.layers_to_transform
        head = "head from a linear probe" if self.config.probe_init else "randomly initialised head"
        if not layers:
            return f"LoRA on every encoder block, {head}, {self.precision}"
        blocks = f"LoRA on encoder {_blocks(layers)}"
        if self.model.split:
            blocks += f"; {_blocks(range(self.model.split))} frozen, computed once and cached"
        elif self.model.frozen_blocks:
            blocks += f"; {_blocks(range(self.model.frozen_blocks))} frozen, recomputed at every step (not cached)"
        return f"{blocks}; {head}, {self.precision}"

    def _run(self, source: Source, precision: str, method: str = "forward",
             model: torch.nn.Module | None = None) -> np.ndarray:
        """``method`` of ``model`` (the model trained unless given) over every row of ``source``; with several
        processes each runs a slice, all get all rows."""
        model = self.model if model is None else model
        if self.world_size == 1:
            return forward_all(model, source.lengths, source.make_batch, self.config.eval_batch_size,
                               precision, self.device, method=method)
        rows = distributed.shard(len(source), self.rank, self.world_size)
        part = forward_all(model, source.lengths[rows], lambda index: source.make_batch(rows[index]),
                           self.config.eval_batch_size, precision, self.device, method=method)
        return distributed.gather_rows(part)

    def _base_embeddings(self, source: Source) -> np.ndarray:
        """The base model's pooled embeddings of ``source``'s rows (LoRA's branches off), for the probe. In bf16
        they come from a bf16 copy of the base model, as the cache pass's do (:func:`lorafit.cache.base_pass`)."""
        runner, precision = base_pass(self.model, self.precision)
        with adapters_off(self.model.encoder):
            return self._run(source, precision, method="embed", model=runner)

    def evaluate(self, source: Source, targets: np.ndarray, n_labels: int) -> tuple[dict[str, float], np.ndarray]:
        """Headline metrics on ``source`` and the logits behind them, in fp32 like ``lorafit evaluate``."""
        logits = self._run(source, INFERENCE_PRECISION)
        return self.task.headline(targets, logits), logits

    def validation_loss(self, logits: np.ndarray, targets: np.ndarray) -> float:
        """The task's training loss (unweighted) on validation data, averaged as the training loss is
        (``Task.loss_total``: per row, or per row and label for multi-label)."""
        target = self.task.target_tensor(targets)
        total = self.task.loss(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), target, None)
        return float(total) / max(float(self.task.loss_total(target, None)), 1.0)

    def prepare(self, train: Encoded, val: Encoded | None, features_needed: bool
                ) -> tuple[Source, Source | None, np.ndarray | None]:
        """Training and validation sources, plus the frozen embeddings of the training texts if needed.

        Without frozen bottom blocks the sources are token batches. With them, one pass caches the
        blocks' output (and yields the embeddings), and every later pass runs only the top blocks.
        """
        split, size = self.model.split, self.config.eval_batch_size
        train_pad = pad_multiple(self.config.pad_to_multiple_of, self.precision, self.device)
        val_pad = pad_multiple(self.config.pad_to_multiple_of, INFERENCE_PRECISION, self.device)
        if not split:
            train_src = Source(train.lengths, token_batches(train, self.pad_id, train_pad))
            # the probe's embeddings: the base model's, as LoRA's B starts at zero
            features = self._base_embeddings(train_src) if features_needed else None
            val_src = Source(val.lengths, token_batches(val, self.pad_id, val_pad)) if val is not None else None
            return train_src, val_src, features
        self.callback.on_phase("cache")
        train_cache, features = build_cache(self.model.encoder, train, split, self.pad_id, size, self.precision,
                                            self.device, pooling=self.model.pooling if features_needed else None,
                                            multiple=train_pad)
        val_source = None
        if val is not None:
            val_cache, _ = build_cache(self.model.encoder, val, split, self.pad_id, size, INFERENCE_PRECISION, self.device,
                                       multiple=val_pad)
            val_source = Source(val.lengths, lambda index: val_cache.batch(index, torch.float32))
        logger.info("cached the output of the %d frozen bottom block(s) for %d + %d texts", split, len(train),
                    len(val) if val is not None else 0)
        return Source(train.lengths, lambda index: train_cache.batch(index, torch.float32)), val_source, features

    def init_head_from_probe(self, features: np.ndarray, train_y: np.ndarray, n_labels: int) -> None:
        """Fit the task's linear probe (logistic regression; ridge for regression) on the frozen embeddings and
        copy it into the head."""
        self.callback.on_phase("probe")
        weight, bias = self.task.fit_probe(features, train_y, n_labels, balanced=self.class_weights is not None)
        init_head(self.model.head, weight, bias)

    def fit(self, train_tokens: Encoded, train_y: np.ndarray, val_tokens: Encoded | None, val_y: np.ndarray | None,
            n_labels: int) -> TrainResult:
        """Train, evaluating on the validation data; the best checkpoint by ``config.metric`` is restored.

        Without validation data (``val_tokens`` None) every step runs and the last state is kept. With
        ``checkpoints`` given to the Trainer, the training state is written every ``checkpoint_every`` steps
        and, when resuming, the loop continues from the newest intact checkpoint exactly as it would have.
        """
        cfg = self.config
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # the user's own glibc setting wins
            bound_heap()
        torch.manual_seed(cfg.seed + self.rank)  # dropout: other masks in every process
        rng = np.random.default_rng(cfg.seed)  # the same global batches in every process
        wall = time.perf_counter()
        resumed = self.checkpoints.load() if self.checkpoints is not None and self.checkpoints.resume else None
        self._check_same_start(resumed)
        result = TrainResult(precision=self.precision, train_samples=len(train_tokens), cached_layers=self.model.split,
                             world_size=self.world_size)
        result.trainable_parameters, result.total_parameters = count_parameters(self.model)
        result.strategy = self.describe()
        self.callback.on_info(result.strategy)
        logger.info(result.strategy)
        probe = cfg.probe_init and resumed is None  # a resumed head comes from the checkpoint
        train, val, features = self.prepare(train_tokens, val_tokens, features_needed=probe)
        if probe:
            self.init_head_from_probe(features, train_y, n_labels)
        wise_start = self._wise_start(resumed)
        result.prepare_seconds = time.perf_counter() - wall
        result.matmul_peak_gflops = matmul_peak_gflops(self.precision, self.device)
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        epochs = resolve_epochs(cfg.epochs, len(train))
        result.epochs = max(epochs, min(math.ceil(cfg.min_steps / steps_per_epoch), MIN_STEPS_MAX_EPOCHS))
        if result.epochs > epochs:
            message = (f"{result.epochs} epochs instead of {epochs}: {len(train)} rows make {steps_per_epoch} "
                       f"step(s) per epoch, and min_steps is {cfg.min_steps} (at most {MIN_STEPS_MAX_EPOCHS} epochs)")
            self.callback.on_info(message)
            logger.info(message)
        total = steps_per_epoch * result.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = _schedule(optimizer, total, cfg.warmup_ratio)
        best, loop = _Best(), _Loop()
        average = self._average(total, result)
        if resumed is not None:
            self._resume(resumed, optimizer, scheduler, best, result, loop)
            average.load(resumed.group("ema"))
            wall -= resumed.info["result"]["train_seconds"]
        model, optimizer = self.accelerator.prepare(self.model, optimizer)
        self.callback.on_train_begin(total, result.trainable_parameters, result.total_parameters)
        if probe and val is not None:
            self._record(result, best, 0, 0.0, float("nan"), val, val_y, n_labels, average)
        if resumed is not None:
            restore_rng(resumed, self.rank)  # last: the probe, the peak measurement and step 0 consume torch's RNG
            self.callback.on_step(loop.step, float(loop.losses[-1]) if loop.losses else float("nan"))
        labels = self.task.target_tensor(train_y)
        step_flops = self._row_flops(train.lengths)
        clock = _Clock(total, self._planned_flops(step_flops, result.epochs, total, val), wall, self.callback)
        stop = False
        model.train()
        self.callback.on_phase("train")
        for epoch in range(loop.epoch, result.epochs):
            if resumed is not None and epoch == resumed.epoch:
                rng.bit_generator.state = resumed.epoch_rng  # the same batch order again
            epoch_rng = numpy_state(rng)
            batches = bucketed_batches(train.lengths, cfg.batch_size, rng, cfg.length_bucketing)
            start = loop.position if resumed is not None and epoch == resumed.epoch else 0
            for position in range(start, len(batches)):
                index = batches[position]
                started = time.perf_counter()
                loop.losses.append(self._step(model, optimizer, scheduler, params, train, index, labels))
                average.update()
                result.loop_seconds += time.perf_counter() - started
                result.train_tflops += float(step_flops[index].sum()) / 1e12
                loop.step, loop.seen = loop.step + 1, loop.seen + len(index)
                step, last = loop.step, position == len(batches) - 1
                clock.step(step, time.perf_counter() - started, float(step_flops[index].sum()), loop.losses[-1])
                if step % TRIM_EVERY == 0:
                    release_free_memory()
                self.callback.on_step(step, loop.losses[-1])
                if isinstance(cfg.eval_every, int) and step % cfg.eval_every == 0 and step < total:
                    stop = self._record(result, best, step, step / steps_per_epoch, np.mean(loop.losses), val,
                                        val_y, n_labels, average)
                    loop.losses = []
                if not stop and last and (cfg.eval_every == "epoch" or step == total):
                    stop = self._record(result, best, step, float(epoch + 1), np.mean(loop.losses), val, val_y,
                                        n_labels, average)
                    loop.losses = []
                if stop:
                    break
                if self.checkpoints is not None and self.checkpoints.due(step, last):
                    rngs = distributed.gather(rng_snapshot())  # each process resumes its own dropout draws
                    if self.accelerator.is_main_process:
                        self._checkpoint(epoch, position + 1, epoch_rng, optimizer, scheduler, best, result, loop,
                                         time.perf_counter() - wall, {"start": wise_start, "ema": average.state},
                                         rngs)
            if stop:
                break
        result.train_seconds = time.perf_counter() - wall
        result.steps = loop.step
        clock.flush(loop.step)
        result.loss_curve, result.estimated_train_seconds = clock.curve, clock.estimate
        result.train_samples_per_second = loop.seen / max(result.train_seconds - result.prepare_seconds, 1e-9)
        # A second measurement after a long loop: the machine's rate varies (other processes, frequency), and
        # the peak is the best it showed. A short loop (few-shot data) skips it: 0.38 s was a tenth of its fit.
        if result.loop_seconds > REMEASURE_PEAK_AFTER_S:
            result.matmul_peak_gflops = max(result.matmul_peak_gflops, matmul_peak_gflops(self.precision, self.device))
        if result.loop_seconds > 0 and result.matmul_peak_gflops > 0:
            result.mfu = result.train_tflops * 1e3 / result.loop_seconds / result.matmul_peak_gflops / self.world_size
        self._restore(best, result)
        if not best.state and average:  # no validation data: the last average is what training keeps
            average.copy_to_model()
        if wise_start:
            self._interpolate(wise_start, result, val, val_y, n_labels)
        result.peak_memory_mb = peak_memory_mb()
        self.callback.on_train_end(result)
        return result

    def _check_same_start(self, resumed: TrainingState | None) -> None:
        """With several processes, refuse to go on unless all resume from the same checkpoint (or none)."""
        if self.world_size == 1:
            return
        steps = distributed.gather(None if resumed is None else resumed.step)
        if len(set(steps)) > 1:
            found = ", ".join(f"rank {r}: {'none' if s is None else f'step {s}'}" for r, s in enumerate(steps))
            raise RunDirError(f"the processes found different checkpoints to resume from ({found}); with several "
                              f"machines --resume needs the checkpoint directory {self.checkpoints.directory} on "
                              "a filesystem they all share")

    def _planned_flops(self, step_flops: np.ndarray, epochs: int, total_steps: int, val: Source | None) -> float:
        """FLOPs of every planned optimisation step and validation pass (for the time estimate)."""
        planned = float(step_flops.sum()) * epochs
        if val is None:
            return planned
        every = self.config.eval_every
        evaluations = epochs if every == "epoch" else total_steps // every + 1
        hidden, intermediate, blocks = block_shape(self.model.encoder.config)
        return planned + evaluations * float(forward_flops(val.lengths, hidden, intermediate,
                                                           blocks - self.model.split).sum())

    def _average(self, total_steps: int, result: TrainResult) -> WeightAverage:
        """The moving average of the weights from the start of training (does nothing when ``ema_decay`` is 0)."""
        average = WeightAverage(self.model, resolve_decay(self.config.ema_decay, total_steps))
        result.ema_decay = average.decay
        if average:
            message = (f"weights averaged: exponential moving average with decay {average.decay:.4g} "
                       f"(a time constant of {1 / (1 - average.decay):.0f} of the {total_steps} steps)")
            self.callback.on_info(message)
            logger.info(message)
        return average

    def _wise_start(self, resumed: TrainingState | None) -> dict[str, torch.Tensor]:
        """The state WiSE interpolation moves back towards: the trainable weights as training starts (after the
        probe; a resumed run reads them from its checkpoint). Empty when ``wise_alpha`` is 1."""
        if self.config.wise_alpha >= 1.0:
            return {}
        if resumed is not None:  # read to the CPU: on a GPU it must join the weights there
            return {k: v.to(self.device, copy=True) for k, v in resumed.group("start").items()}
        return {k: v for k, v in _trainable_state(self.model).items() if _interpolated(k)}

    def _interpolate(self, start: dict[str, torch.Tensor], result: TrainResult, val: Source | None,
                     val_y: np.ndarray | None, n_labels: int) -> None:
        """Move the kept state back towards ``start`` (WiSE-FT), then score the validation data again: the
        calibration and the reported validation metrics are the interpolated model's."""
        alpha = self.config.wise_alpha
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, begin in start.items():
                params[name].copy_(begin + alpha * (params[name] - begin))
        result.wise_alpha = alpha
        message = f"weights interpolated: {alpha:g} x trained + {1 - alpha:g} x the probe start (WiSE-FT)"
        if val is not None:
            trained = result.checkpoint_validation()
            scores, result.val_logits = self.evaluate(val, val_y, n_labels)
            scores["loss"] = self.validation_loss(result.val_logits, val_y)
            result.best_metric = scores.get(self.metric, result.best_metric)
            message += f"; validation {self.metric} {trained.get(self.metric, float('nan')):.4f} -> " \
                       f"{scores.get(self.metric, float('nan')):.4f}"
            result.wise_validation = {"trained": trained, "interpolated": scores}
        self.callback.on_info(message)
        logger.info(message)

    def _checkpoint(self, epoch: int, position: int, epoch_rng: dict, optimizer, scheduler, best: "_Best",
                    result: TrainResult, loop: "_Loop", elapsed: float, extra: dict[str, dict],
                    rngs: list[tuple[dict, dict]]) -> None:
        """Write the whole training state after ``position`` batches of ``epoch`` (see :mod:`lorafit.checkpoint`);
        ``rngs``: every process's :func:`~lorafit.checkpoint.rng_snapshot`, in rank order."""
        tensors, groups = optimizer_tensors(optimizer)
        rng_tensors, rng_info = rng_entries(rngs)
        tensors.update(rng_tensors)
        tensors.update({f"trainable/{k}": v for k, v in _trainable_state(self.model).items()})
        tensors.update({f"best/{k}": v for k, v in best.state.items()})
        for prefix, state in extra.items():  # the WiSE start, the moving average
            tensors.update({f"{prefix}/{k}": v for k, v in state.items()})
        if best.logits is not None:
            tensors["best_logits"] = torch.from_numpy(np.ascontiguousarray(best.logits))
        counters = {k: getattr(result, k) for k in _RESUMED_COUNTERS}
        info = {"optimizer": groups, "scheduler": scheduler.state_dict(), **rng_info,
                "best": {"metric": best.metric, "step": best.step, "epoch": best.epoch, "bad_evals": best.bad_evals,
                         "loss": best.loss},
                "result": {**counters, "train_seconds": elapsed}, "loop": {"seen": loop.seen, "losses": loop.losses},
                "scaler": self.scaler.state_dict()}  # fp16's loss scale and growth counter ({} otherwise)
        self.checkpoints.save(TrainingState(loop.step, epoch, position, epoch_rng, tensors, info))

    def _resume(self, state: TrainingState, optimizer, scheduler, best: "_Best", result: TrainResult,
                loop: "_Loop") -> None:
        """Put the model, optimizer, scheduler, early stopping and counters back as ``state`` holds them."""
        _load_state(self.model, state.group("trainable"))
        load_optimizer(optimizer, state)
        scheduler.load_state_dict(state.info["scheduler"])
        if self.scaler.is_enabled() and state.info.get("scaler"):  # older checkpoints: a fresh scale, as before
            self.scaler.load_state_dict(state.info["scaler"])
        saved = state.info["best"]
        best.metric, best.step, best.epoch, best.bad_evals = (saved["metric"], saved["step"], saved["epoch"],
                                                              saved["bad_evals"])
        best.loss = saved.get("loss", math.inf)
        best.state = {k: v.clone() for k, v in state.group("best").items()}
        logits = state.tensors.get("best_logits")
        best.logits = logits.numpy() if logits is not None else None
        counters, prepared = state.info["result"], result.prepare_seconds
        for key in _RESUMED_COUNTERS:
            setattr(result, key, counters[key])
        result.prepare_seconds += prepared  # this session's preparation counts too
        loop.step, loop.epoch, loop.position = state.step, state.epoch, state.position
        loop.seen, loop.losses = state.info["loop"]["seen"], list(state.info["loop"]["losses"])
        message = f"resumed at step {state.step} (epoch {state.epoch + 1}, batch {state.position})"
        self.callback.on_info(message)
        logger.info(message)

    def _row_flops(self, lengths: np.ndarray) -> np.ndarray:
        """Training FLOPs of each row per step: forward and backward through the blocks from the lowest
        LoRA block up, plus forward only through frozen blocks below it that are not cached."""
        hidden, intermediate, blocks = block_shape(self.model.encoder.config)
        frozen = self.model.frozen_blocks
        trained = BACKWARD_FACTOR * forward_flops(lengths, hidden, intermediate, blocks - frozen)
        return trained + forward_flops(lengths, hidden, intermediate, frozen - self.model.split)

    def _step(self, model: torch.nn.Module, optimizer, scheduler, params: list[torch.nn.Parameter],
              train: Source, index: np.ndarray, labels: torch.Tensor) -> float:
        """One optimisation step on the global batch ``index`` (autocast forward, loss in fp32, clipped
        gradients); returns the batch's loss.

        Each process takes its slice of the batch, and its loss is its rows' task loss summed, over the whole
        batch's total (``Task.loss_total``: rows, class weights, or rows x labels), times the number of
        processes: DistributedDataParallel averages the gradients over processes, which gives the gradient
        of the whole batch's mean loss, as one process gets. A process whose slice is empty (a batch with
        fewer rows than processes) runs one row at weight 0, so that it still joins the gradient exchange.
        """
        rows = index[distributed.shard(len(index), self.rank, self.world_size)]
        share = float(self.world_size) if len(rows) else 0.0
        rows = rows if len(rows) else index[:1]
        batch = {k: v.to(self.device) for k, v in train.make_batch(rows).items()}
        with autocast(self.precision, self.device):
            logits = model(**batch)
        targets = labels[rows].to(self.device)
        total = self.task.loss_total(labels[index].to(self.device), self.class_weights)
        loss = self.task.loss(logits.float(), targets, self.class_weights) / total * share
        self.accelerator.backward(self.scaler.scale(loss))
        self.scaler.unscale_(optimizer)
        self.accelerator.clip_grad_norm_(params, 1.0)
        self.scaler.step(optimizer)  # skipped when fp16 gradients overflowed (the scale then shrinks)
        self.scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1:
            loss = self.accelerator.reduce(loss.detach(), reduction="mean")  # the whole batch's loss
        return float(loss.detach())

    def _record(self, result: TrainResult, best: _Best, step: int, epoch: float, loss: float,
                val: Source, val_y: np.ndarray, n_labels: int, average: WeightAverage) -> bool:
        """Evaluate (the averaged weights when ``average`` is on), keep the best state, and return True when
        early stopping says stop.

        Without validation data only the training loss is recorded, and the latest state counts as best.
        """
        record = {"step": step, "epoch": round(epoch, 3), "train_loss": None if np.isnan(loss) else float(loss)}
        if val is None:
            result.history.append(record)
            best.step, best.epoch = step, epoch
            return False
        with average.applied():  # the weights in the model while evaluated are those a new best keeps
            scores, logits = self.evaluate(val, val_y, n_labels)
            record.update({f"val_{k}": v for k, v in scores.items()})
            record["val_loss"] = self.validation_loss(logits, val_y)
            value = self.task.selection(scores, self.metric)
            # The probe head (step 0) stays kept only while no fine-tuned checkpoint beats it on validation loss:
            # a fine-tuned one with a lower loss replaces it even a row or two behind on accuracy, which on a
            # validation split of ~1,000 rows is noise (BENCHMARKS.md, "The probe head as a checkpoint").
            improved = value > best.metric or (best.step == 0 and bool(best.state) and step > 0
                                                and record["val_loss"] < best.loss)
            # A tie on the selection metric (accuracy moves in steps of 1/rows) goes to the lower validation loss.
            if improved or (value == best.metric and record["val_loss"] < best.loss):
                best.metric, best.step, best.epoch, best.loss = value, step, epoch, record["val_loss"]
                best.state, best.logits = _trainable_state(self.model), logits
        result.history.append(record)
        self.callback.on_evaluate(record)
        best.bad_evals = 0 if improved else best.bad_evals + 1
        # Every process scored the same gathered logits; rank 0's decision is the one all follow.
        stop = bool(distributed.broadcast(self.config.patience > 0 and best.bad_evals >= self.config.patience))
        result.stopped_early = stop
        if stop:
            logger.info("early stopping at step %d: %s did not improve for %d evaluations",
                        step, self.metric, best.bad_evals)
        return stop

    def _restore(self, best: _Best, result: TrainResult) -> None:
        if best.state:
            _load_state(self.model, best.state)
        # best.metric is the maximised value: negated back for metrics where lower is better
        result.best_metric = self.task.selection({self.metric: best.metric}, self.metric) if best.state else None
        result.val_logits = best.logits
        result.best_step, result.best_epoch = best.step, best.epoch
