"""An exponential moving average (EMA) of the trainable weights (LoRA's A and B, the head), kept beside the
optimiser: after every step ``average = decay * average + (1 - decay) * weights``.

The average starts from the weights as training starts (the probe-initialised head, LoRA's B at zero).
Evaluations score the averaged weights, and the kept checkpoint is an average, so the run directory holds
averaged weights: plain peft loads them like any others. Off by default: on BANKING77 it moved test accuracy
by -0.13 to +0.29 points over five seeds (mean +0.10), within the seeds' spread (``bench/averaging.py``,
BENCHMARKS.md).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

AUTO_TIME_CONSTANT = 1 / 3
"""``ema_decay="auto"``: the average's time constant ``1 / (1 - decay)`` is this share of the planned steps
(the start then weighs ``exp(-3)``, about 5%, at the end), up to ``AUTO_MAX_STEPS``."""
AUTO_MAX_STEPS = 200
"""The longest time constant ``auto`` chooses: on SST-2 (3,790 steps) averages over longer spans than 200 steps
(decay 0.995) lost accuracy (``bench/averaging.py``)."""


def resolve_decay(setting: float | str, total_steps: int) -> float:
    """The decay ``ema_decay`` asks for: ``"auto"`` from the planned steps, else the number itself (0: off)."""
    if setting != "auto":
        return float(setting)
    steps = min(AUTO_TIME_CONSTANT * total_steps, AUTO_MAX_STEPS)
    return max(0.0, 1.0 - 1.0 / max(steps, 1.0))


class WeightAverage:
    """The moving average of ``model``'s trainable parameters; does nothing when ``decay`` is 0."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self._params = {n: p for n, p in model.named_parameters() if p.requires_grad} if decay > 0 else {}
        self.state = {n: p.detach().clone() for n, p in self._params.items()}
        """The averaged tensors by parameter name (empty when off)."""

    def __bool__(self) -> bool:
        return bool(self.state)

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a saved average (a resumed run)."""
        with torch.no_grad():
            for name, value in state.items():
                self.state[name].copy_(value)

    def update(self) -> None:
        """Fold the current weights in (after an optimisation step)."""
        with torch.no_grad():
            for name, average in self.state.items():
                average.lerp_(self._params[name].detach(), 1.0 - self.decay)

    def copy_to_model(self) -> None:
        """Replace the model's trainable weights by the average."""
        self._assign(self.state)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, the trained ones back after it."""
        if not self.state:
            yield
            return
        trained = {n: p.detach().clone() for n, p in self._params.items()}
        self.copy_to_model()
        try:
            yield
        finally:
            self._assign(trained)

    def _assign(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                self._params[name].copy_(value)
