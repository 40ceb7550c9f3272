"""The run report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` on a ``FigureCanvasAgg`` directly, never through
pyplot, so drawing touches no global backend state and needs no display.
"""
from __future__ import annotations

import functools
import io
from collections.abc import Callable

import numpy as np

DPI = 100
TRAIN_COLOR, EVAL_COLOR = "#4c72b0", "#dd8452"


def _plain_text(draw: Callable[..., bytes]) -> Callable[..., bytes]:
    """Draw with mathtext off: a label such as ``cost $5`` is text, not an (unbalanced) formula."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> bytes:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)
    return wrapper


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _class_figure(width: float, height: float, labels: list[str], size: float, bottom: bool = False,
                  right: float = 0.3):
    """A figure with a column of tick labels per class on the left (and a row at the ``bottom``), its margins
    set from the widest label.

    Constrained layout measures every tick label several times over; with 77 classes these three figures took
    1.33x as long with it (``bench/report_time.py``). Margins in inches: the labels plus room for the axis
    label and ticks, a title on top, ``right`` on the right (a colour bar takes its space from the axes)."""
    from matplotlib.text import Text

    figure = _figure(width, height, layout=None)
    renderer = figure.canvas.get_renderer()
    probe = Text(0, 0, "", fontsize=size, figure=figure)
    widest = 0.0
    for label in labels:
        probe.set_text(label)
        widest = max(widest, probe.get_window_extent(renderer).width / DPI)
    margin_left = widest + 0.55
    margin_bottom = (widest if bottom else 0.0) + 0.55
    figure.subplots_adjust(left=min(0.6, margin_left / width), bottom=min(0.6, margin_bottom / height),
                           right=1 - right / width, top=1 - 0.4 / height)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _label_size(n: int) -> float:
    """Tick-label font size that keeps ``n`` class names legible without overlapping."""
    return 9.0 if n <= 20 else max(4.0, 9.0 - (n - 20) / 12)


@_plain_text
def history_png(history: list[dict], loss_curve: list[list[float]], metric: str) -> bytes:
    """Training loss (curve and per evaluation) and the validation metrics per evaluation, by step."""
    figure = _figure(10, 3.6)
    loss_ax, val_ax = figure.subplots(1, 2)
    if loss_curve:
        steps, losses = zip(*loss_curve)
        loss_ax.plot(steps, losses, color=TRAIN_COLOR, lw=1, label="training loss (window mean)")
    evaluated = [h for h in history if h.get("train_loss") is not None]
    if evaluated:
        loss_ax.plot([h["step"] for h in evaluated], [h["train_loss"] for h in evaluated], "o", color="#222222",
                     label="mean since last evaluation")
    loss_ax.set(xlabel="optimisation step", ylabel="cross-entropy", title="training loss")
    if loss_curve or evaluated:
        loss_ax.legend(fontsize=8)
    validated = [h for h in history if "val_accuracy" in h]
    if validated:
        steps = [h["step"] for h in validated]
        for key, style in (("accuracy", "o-"), ("macro_f1", "s--")):
            val_ax.plot(steps, [100 * h[f"val_{key}"] for h in validated], style, label=key)
        lowest = min(min(100 * h[f"val_{k}"] for h in validated) for k in ("accuracy", "macro_f1"))
        val_ax.set_ylim(max(0.0, lowest - 5), 101)
        val_ax.set(xlabel="optimisation step (0: probe head only)", ylabel="%",
                   title=f"validation metrics (best checkpoint by {metric})")
        val_ax.legend(fontsize=8)
    else:
        val_ax.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=val_ax.transAxes)
        val_ax.set_axis_off()
    return _png(figure)


@_plain_text
def confusion_png(matrix: np.ndarray, labels: list[str]) -> bytes:
    """The confusion matrix normalised by row (share of each true class predicted as each class)."""
    n = len(labels)
    side = min(16.0, max(5.0, 0.17 * n + 2.5))
    size = _label_size(n)
    figure = _class_figure(side + 1.2, side, labels, size, bottom=True)
    ax = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=size)
    ax.set_yticks(range(n), labels, fontsize=size)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (each row sums to 1)")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=ax, shrink=0.6)
    return _png(figure)


@_plain_text
def f1_png(f1: dict[str, float]) -> bytes:
    """Per-class F1, sorted from worst (top) to best."""
    ordered = sorted(f1.items(), key=lambda kv: (kv[1], kv[0]))
    n = len(ordered)
    figure = _class_figure(8, min(30.0, max(2.5, 0.16 * n + 1.2)), [k for k, _ in ordered], _label_size(n))
    ax = figure.subplots()
    positions = np.arange(n)[::-1]
    values = [v for _, v in ordered]
    ax.barh(positions, values, color=[EVAL_COLOR if v < 0.5 else TRAIN_COLOR for v in values])
    ax.set_yticks(positions, [k for k, _ in ordered], fontsize=_label_size(n))
    ax.set(xlim=(0, 1), xlabel="F1", title="per-class F1, worst first")
    ax.axvline(float(np.mean(values)) if values else 0, color="#222222", lw=1, ls="--", label="macro-F1")
    ax.legend(fontsize=8, loc="lower right")
    return _png(figure)


@_plain_text
def distribution_png(labels: list[str], train: dict[str, int], other: dict[str, int] | None,
                     other_name: str) -> bytes:
    """Share of rows per class in the training data and, when given, the evaluation data."""
    n = len(labels)
    figure = _class_figure(8, min(30.0, max(2.5, 0.18 * n + 1.2)), labels, _label_size(n))
    ax = figure.subplots()
    positions = np.arange(n)[::-1].astype(float)
    height = 0.4 if other else 0.8
    for counts, name, color, shift in ((train, "training", TRAIN_COLOR, height / 2 if other else 0),
                                       (other, other_name, EVAL_COLOR, -height / 2)):
        if counts:
            total = max(1, sum(counts.values()))
            ax.barh(positions + shift, [100 * counts.get(label, 0) / total for label in labels], height=height,
                    color=color, label=f"{name} ({total} rows)")
    ax.set_yticks(positions, labels, fontsize=_label_size(n))
    ax.set(xlabel="% of rows", title="class distribution")
    ax.legend(fontsize=8, loc="lower right")
    return _png(figure)


@_plain_text
def reliability_png(bins: list[dict], ece: float, temperature: float) -> bytes:
    """Accuracy against confidence per confidence bin (the diagonal is perfect calibration), with counts."""
    figure = _figure(8, 4)
    ax, counts_ax = figure.subplots(1, 2, width_ratios=[3, 2])
    filled = [b for b in bins if b["count"]]
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.plot([0, 1], [0, 1], ls="--", color="#888888", label="perfect calibration")
    ax.bar([(b["low"] + b["high"]) / 2 for b in filled], [b["accuracy"] for b in filled], width=width * 0.9,
           color=TRAIN_COLOR, alpha=0.8, label="accuracy in bin")
    ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="#222222",
            label="mean confidence in bin")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=f"reliability (ECE {100 * ece:.1f}%, temperature {temperature:g})")
    ax.legend(fontsize=8, loc="upper left")
    counts_ax.bar(centers, [b["count"] for b in bins], width=width * 0.9, color=EVAL_COLOR)
    counts_ax.set(xlim=(0, 1), xlabel="confidence", ylabel="rows", title="rows per bin")
    return _png(figure)


@_plain_text
def study_png(rows: list[dict], importances: dict[str, float], metric: str, min_trials: int) -> bytes:
    """A ``lorafit tune`` study: each trial's validation metric with the best so far, and parameter importances
    (estimated once ``min_trials`` trials have finished)."""
    figure = _figure(10, 3.6)
    history_ax, importance_ax = figure.subplots(1, 2)
    finished = [r for r in rows if r["state"] == "complete"]
    pruned = [r for r in rows if r["state"] == "pruned" and r["value"] is not None]
    if finished:
        history_ax.plot([r["trial"] for r in finished], [r["value"] for r in finished], "o", color=TRAIN_COLOR,
                        label="finished trial")
        best = np.maximum.accumulate([r["value"] for r in finished])
        history_ax.step([r["trial"] for r in finished], best, where="post", color="#222222", lw=1, label="best so far")
    if pruned:
        history_ax.plot([r["trial"] for r in pruned], [r["value"] for r in pruned], "x", color=EVAL_COLOR,
                        label="pruned (last evaluation)")
    from matplotlib.ticker import MaxNLocator

    history_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    history_ax.set(xlabel="trial", ylabel=f"validation {metric}", title="optimisation history")
    if finished or pruned:
        history_ax.legend(fontsize=8)
    if importances:
        names = list(importances)[::-1]
        importance_ax.barh(names, [importances[n] for n in names], color=TRAIN_COLOR)
        importance_ax.set(xlabel="importance (PED-ANOVA, sums to 1)", title="parameter importances")
    else:
        importance_ax.text(0.5, 0.5, f"parameter importances need {min_trials} or more\nfinished trials with "
                           "different values", ha="center", va="center", transform=importance_ax.transAxes)
        importance_ax.set_axis_off()
    return _png(figure)
