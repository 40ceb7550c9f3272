"""Console output for the CLI: the training and streaming progress bars and the tables (the library never prints)."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.markup import escape
from rich.table import Table

from lorafit.card import epochs_text
from lorafit.datacheck import AUTO_QUANTILE, DataCheck
from lorafit.rundir import predict_length_of
from lorafit.tasks import format_metric
from lorafit.training import Callback

LABEL_ROWS = 20
"""Classes listed one per row in the data summary; with more, the smallest and largest few."""

_PHASES = {"load": "loading the base model", "tokenize": "tokenising", "cache": "caching the frozen blocks",
           "probe": "fitting the probe head",
           "train": "training"}


REFRESH_PER_SECOND = 2
"""The bar redraws from its own thread; on 2 cores every wake-up takes the GIL and a core from training
(one BANKING77 run each: 153 s with rich's default 10 redraws/s, 139 s with --no-progress)."""


class RichCallback(Callback):
    """A rich progress bar with the running loss and the last validation metric."""

    def __init__(self, console: Console, enabled: bool = True, metric: str = "accuracy") -> None:
        self.console, self.enabled, self.metric = console, enabled, metric
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
                                 TextColumn("est {task.fields[estimate]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 disable=not enabled, transient=False, refresh_per_second=REFRESH_PER_SECOND)
        self.task = None
        self._loss = math.nan

    def __enter__(self) -> "RichCallback":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def on_phase(self, name: str) -> None:
        if self.task is None:  # started at the first phase, so a bad data file shows no empty bar
            self.progress.start()
            self.task = self.progress.add_task(_PHASES["load"], total=None, loss="-", val="-", estimate="-")
        self.progress.update(self.task, description=_PHASES.get(name, name))

    def on_info(self, message: str) -> None:
        self.console.print(message)

    def on_data_check(self, check: DataCheck) -> None:
        for item in data_check_renderables(check):
            self.console.print(item)

    def on_estimate(self, seconds: float, measured_steps: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, estimate=_duration(seconds))
        self.console.print(f"estimated training time: {_duration(seconds)} in all (from the timing of "
                           f"{measured_steps} optimisation steps)")

    def on_train_begin(self, total_steps: int, trainable: int, total: int) -> None:
        self.progress.update(self.task, total=total_steps)
        self.console.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")

    def on_step(self, step: int, loss: float) -> None:
        self._loss = loss if math.isnan(self._loss) else 0.9 * self._loss + 0.1 * loss
        self.progress.update(self.task, completed=step, loss=f"{self._loss:.3f}")

    def on_evaluate(self, record: dict) -> None:
        value = format_metric(self.metric, record[f"val_{self.metric}"])
        self.progress.update(self.task, val=f"{self.metric} {value}")
        if not self.enabled:
            self.console.print(f"step {record['step']} (epoch {record['epoch']}): val {self.metric} {value}")


class TrialProgress(RichCallback):
    """The bar of ``lorafit tune``: one bar every trial reuses (``trial 2/20: training``); the data summary and
    each message shown once."""

    def __init__(self, console: Console, enabled: bool = True, metric: str = "accuracy", trials: int = 1) -> None:
        super().__init__(console, enabled, metric)
        self.trials, self.trial = trials, 0
        self._shown: set[str] = set()

    def on_phase(self, name: str) -> None:
        if name == "load":  # every trial starts by loading the base model
            self.trial += 1
        super().on_phase(name)
        self.progress.update(self.task, description=f"trial {self.trial}/{self.trials}: {_PHASES.get(name, name)}")

    def on_data_check(self, check: DataCheck) -> None:
        if "data check" not in self._shown:
            self._shown.add("data check")
            super().on_data_check(check)

    def on_info(self, message: str) -> None:
        if message not in self._shown:
            self._shown.add(message)
            super().on_info(message)

    def on_train_begin(self, total_steps: int, trainable: int, total: int) -> None:
        self._loss = math.nan
        self.progress.update(self.task, total=total_steps, completed=0, loss="-", val="-", estimate="-")

    def on_estimate(self, seconds: float, measured_steps: int) -> None:
        self.progress.update(self.task, estimate=_duration(seconds))

    def on_evaluate(self, record: dict) -> None:
        self.progress.update(self.task, val=f"{self.metric} {format_metric(self.metric, record[f'val_{self.metric}'])}")


def _value(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _settings(params: dict) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


def trial_line(trial, metric: str) -> str:
    """One line on a finished ``lorafit tune`` trial: its state, metric and settings."""
    state = trial.state.name.lower()
    if state == "complete":
        outcome = f"{metric} {format_metric(metric, trial.value)}"
    elif state == "pruned":
        step = trial.last_step
        outcome = "pruned" + (f" at step {step} ({metric} {format_metric(metric, trial.intermediate_values[step])})"
                              if step is not None else "")
    else:
        outcome = state
    return f"trial {trial.number}: {outcome}  {escape(_settings(trial.params))}"


def study_table(summary: dict, rows: int = 10) -> Table:
    """The best ``rows`` trials of a ``lorafit tune`` study (finished first, by value), with their settings."""
    metric = summary["metric"]
    sign = 1 if summary.get("direction") == "minimize" else -1
    ranked = sorted(summary["rows"], key=lambda r: (r["state"] != "complete", sign * (r["value"] or 0.0), r["trial"]))
    names = [n for n in summary["search_space"] if any(n in r for r in ranked)]
    table = Table(title=f"study {summary['study_name']}: {len(ranked)} trial(s), best {min(rows, len(ranked))} "
                        f"by validation {metric}")
    for column in ("trial", "state", metric, *names, "seconds"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for r in ranked[:rows]:
        value = "-" if r["value"] is None else format_metric(metric, r["value"])
        table.add_row(str(r["trial"]), r["state"], value,
                      *(escape(_value(r[n])) if n in r else "-" for n in names),
                      "-" if r["seconds"] is None else f"{r['seconds']:.1f}")
    return table


def _duration(seconds: float) -> str:
    """``75.2`` -> ``1m 15s``; under a minute, whole seconds."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _short(source: str) -> str:
    """A data source without its directories: ``data/train.csv (stratified 10% split)`` -> ``train.csv (...)``."""
    path, _, rest = source.partition(" (")
    return os.path.basename(path) + (f" ({rest}" if rest else "")


def _label_rows(check: DataCheck) -> tuple[list[str], list[str]]:
    """Labels to list (all, or the smallest and largest training classes) and the split columns."""
    counts = check.train.label_counts
    ordered = sorted(counts, key=lambda k: (counts[k], k))
    shown = ordered if len(ordered) <= LABEL_ROWS else ordered[:LABEL_ROWS // 2] + ["..."] + ordered[-5:]
    return shown, [s.name for s in check.splits]


def data_check_renderables(check: DataCheck) -> list:
    """The data summary printed before training and by ``lorafit inspect``: tables, lengths, warnings."""
    splits = Table(title="data")
    for column in ("split", "source", "rows", "classes", "empty dropped", "truncated", "also in training"):
        splits.add_column(column, justify="left" if column in ("split", "source") else "right")
    for s in check.splits:
        splits.add_row(s.name, escape(_short(s.source)), str(s.rows), str(len(s.label_counts)), str(s.dropped_empty),
                       "-" if s.truncated is None else str(s.truncated),
                       "-" if s.name == "training" else str(s.overlap_with_train))
    shown, columns = _label_rows(check)
    labels = Table(title=f"rows per label ({len(check.train.label_counts)} classes"
                         + (", smallest and largest training classes)" if "..." in shown else ")"))
    labels.add_column("label")
    for column in columns:
        labels.add_column(column, justify="right")
    for label in shown:
        labels.add_row(escape(label), *("" if label == "..." else str(s.label_counts.get(label, 0)) for s in check.splits))
    items: list = [splits, labels] if check.train.label_counts else [splits]  # regression: no classes
    if check.length_percentiles:
        p = check.length_percentiles
        how = (f"auto: the {AUTO_QUANTILE:g}th percentile rounded up to a multiple of 8"
               + (f", capped at the model's {check.model_limit}" if check.model_limit else "")) \
            if check.max_length_auto else "as given"
        items.append(f"token lengths of the training texts: median {p['p50']}, 90% {p['p90']}, 95% {p['p95']}, "
                     f"99% {p['p99']}, max {p['p100']}; max_length {check.max_length} ({how}) truncates "
                     f"{check.train.truncated} training row(s)"
                     + (f"; validation, test and predictions read up to {check.predict_max_length} tokens"
                        if check.predictions_cut_apart else ""))
    items.append(f"duplicates in training: {check.duplicates} repeated row(s), {check.conflicting} text(s) with "
                 f"conflicting labels; imbalance (largest / smallest class): {check.imbalance:.1f}x")
    items += [f"[yellow]warning:[/yellow] {escape(w)}" for w in check.warnings]
    return items


def summary_table(clf) -> Table:
    """Best validation metric, where it came from, time and speed (or the last state, without validation)."""
    m = clf.metrics_
    metric = clf.train_config.metric
    v = m["validation"]
    table = Table(title="training summary")
    others = [k for k in v if k != metric] if "accuracy" not in v else ["accuracy", "macro_f1"]
    names = {"accuracy": "val accuracy", "macro_f1": "val macro-F1"}
    columns = ("best val " + metric, *(names.get(k, "val " + k) for k in others), "best at") if v \
        else ("validation", "kept")
    for column in columns + ("train time", "samples/s", "peak memory"):
        table.add_column(column, justify="right")
    if v:
        cells = (format_metric(metric, v[metric]), *(format_metric(k, v[k]) for k in others),
                 f"epoch {m['best_epoch']:g}, step {m['best_step']}" + (" (probe)" if m["best_step"] == 0 else ""))
    else:
        cells = ("none (trained on every row)", f"last state, step {m['best_step']}")
    estimate = f" (est. {_duration(m['estimated_train_seconds'])})" if m.get("estimated_train_seconds") else ""
    table.add_row(*cells, f"{m['train_wall_seconds']:.1f} s{estimate}", f"{m['train_samples_per_second']:.1f}",
                  f"{m['peak_memory_mb']:.0f} MiB")
    return table


def evaluation_tables(result: dict, max_classes: int = 15) -> list[Table]:
    """A headline table and a per-class table (worst F1 first) for ``lorafit evaluate``; the tables of a
    multi-label or regression run (see :func:`task_tables`) for theirs."""
    if "accuracy" not in result:
        return task_tables(result, max_classes)
    head = Table(title=f"evaluation on {result['data']['source']} ({result['n']} rows)")
    for column in ("accuracy", "macro-F1", "classes"):
        head.add_column(column, justify="right")
    head.add_row(f"{100 * result['accuracy']:.2f}%", f"{100 * result['macro_f1']:.2f}%", str(len(result["labels"])))
    shown = [kv for kv in sorted(result["per_class"].items(), key=lambda kv: (kv[1]["f1"], kv[0]))
             if kv[1]["support"] or kv[1]["precision"]]
    per = Table(title=f"per class, worst F1 first ({min(max_classes, len(shown))} of {len(shown)})")
    for column in ("label", "precision", "recall", "F1", "support"):
        per.add_column(column, justify="right" if column != "label" else "left")
    for label, s in shown[:max_classes]:
        per.add_row(label, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
    return [head] + _score_tables(result) + ([per] if max_classes else [])


def task_tables(result: dict, max_labels: int = 15) -> list[Table]:
    """Multi-label: micro/macro-F1 and subset accuracy, then per label (worst F1 first) with its threshold;
    regression: MSE, MAE, RMSE, Pearson and Spearman."""
    head = Table(title=f"evaluation on {result['data']['source']} ({result['n']} rows)")
    columns = ("micro_f1", "macro_f1", "subset_accuracy") if "micro_f1" in result else \
        ("mse", "mae", "rmse", "pearson", "spearman")
    for column in columns:
        head.add_column(column.replace("_", " "), justify="right")
    head.add_row(*(format_metric(c, result[c]) for c in columns))
    if "per_label" not in result or not max_labels:
        return [head]
    shown = sorted(result["per_label"].items(), key=lambda kv: (kv[1]["f1"], kv[0]))
    per = Table(title=f"per label, worst F1 first ({min(max_labels, len(shown))} of {len(shown)})")
    for column in ("label", "threshold", "precision", "recall", "F1", "support"):
        per.add_column(column, justify="right" if column != "label" else "left")
    for label, s in shown[:max_labels]:
        per.add_row(escape(label), f"{s['threshold']:.3f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                    str(s["support"]))
    return [head, per]


def _score_tables(result: dict) -> list[Table]:
    """Calibration (ECE, Brier, NLL at the run's temperature and at 1) and abstention, when present."""
    tables = []
    if "ece" in result:
        cal = Table(title=f"calibration (temperature {result['temperature']:.3f}; ECE over 15 bins)")
        for column in ("probabilities", "ECE", "Brier", "NLL"):
            cal.add_column(column, justify="right")
        for name, scores in (("calibrated", result), ("temperature 1", result["uncalibrated"])):
            cal.add_row(name, f"{scores['ece']:.4f}", f"{scores['brier']:.4f}", f"{scores['nll']:.4f}")
        tables.append(cal)
    if "abstain" in result:
        a = result["abstain"]
        table = Table(title=f"abstaining below {a['threshold']:.4f} (label {a['unknown_label']!r})")
        columns = {"coverage": a["coverage"], "accuracy on answered": a["selective_accuracy"]}
        if "oos_label" in a:
            columns.update({"in-scope accuracy": a["in_scope_accuracy"], "out-of-scope recall": a["oos_recall"]})
        for column in columns:
            table.add_column(column, justify="right")
        table.add_row(*("-" if v is None else f"{100 * v:.2f}%" for v in columns.values()))
        tables.append(table)
    return tables


def info_table(manifest: dict, metrics: dict) -> Table:
    """A two-column overview of a run directory."""
    table = Table(show_header=False, title="lorafit run")
    labels = manifest["labels"]
    cfg, lora = manifest["train_config"], manifest["lora"]
    val = metrics.get("validation", {})
    rows = [("base model", f"{manifest['base_model']['name']} ({manifest['base_model'].get('hash', '?')})"),
            ("labels", f"{len(labels)}: " + ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")),
            ("pooling / max_length", f"{manifest['pooling']} / {manifest['max_length']}"
                                     + (" (auto)" if manifest.get("max_length_auto") else "")
                                     + f", predictions {predict_length_of(manifest)}"),
            ("input", f"text pairs: {manifest.get('text_column')} + {manifest.get('text_pair_column')}"
                      if manifest.get("text_pairs") else f"text: {manifest.get('text_column')}"),
            ("LoRA", f"r={lora['r']} alpha={lora['lora_alpha']} dropout={lora['lora_dropout']} "
                     f"targets={lora['target_modules'] or 'all linear'}"),
            ("training", f"epochs={epochs_text(cfg, metrics)} batch={cfg['batch_size']} lr={cfg['learning_rate']} "
                         f"precision={manifest.get('train_precision')} processes={manifest.get('world_size', 1)}"),
            ("task", manifest.get("task", "single_label_classification")),
            ("validation", ", ".join(f"{k} {format_metric(k, v)}" for k, v in val.items()) or "-"),
            ("train time", f"{metrics.get('train_wall_seconds', 0):.1f} s, "
                           f"{metrics.get('train_samples_per_second', 0):.1f} samples/s"),
            ("versions", ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()))]
    table.add_column()
    table.add_column(overflow="fold")  # long paths wrap in the cell, never cut (a pipe gets 80 columns)
    for key, value in rows:
        table.add_row(key, value)
    return table


class StreamProgress:
    """A progress bar over chunks of a file (share of the file read), with rows done and rows/s.

    ``track(chunks)`` passes each chunk on and counts it once the consumer asks for the next one, that
    is once its rows are written; ``rows`` and ``rate`` give the totals at the end.
    """

    def __init__(self, console: Console, description: str, enabled: bool = True) -> None:
        self.progress = Progress(TextColumn(description), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TextColumn("{task.fields[rows]:,} rows"), TextColumn("{task.fields[rate]} rows/s"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 disable=not enabled, transient=False, refresh_per_second=REFRESH_PER_SECOND)
        self.rows = 0
        self.seconds = 0.0

    @property
    def rate(self) -> float:
        """Rows per second over the whole run (model loading excluded)."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def track(self, chunks: Iterable[tuple[list[str], float]]) -> Iterator[list[str]]:
        start = time.perf_counter()
        with self.progress:
            task = self.progress.add_task("", total=1.0, rows=0, rate="-")
            for texts, done in chunks:
                yield texts
                self.rows += len(texts)
                self.seconds = time.perf_counter() - start
                # readers buffer ahead, so "all read" comes before "all written": the bar ends with the loop
                self.progress.update(task, completed=min(done, 0.999), rows=self.rows, rate=f"{self.rate:,.0f}")
            self.progress.update(task, completed=1.0)
