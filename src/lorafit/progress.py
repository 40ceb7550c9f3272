"""Console output for the CLI: the training and streaming progress bars and the tables (the library never prints)."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.table import Table

from lorafit.training import Callback, TrainResult

_PHASES = {"load": "loading the base model", "tokenize": "tokenising", "cache": "caching the frozen blocks",
           "probe": "fitting the probe head",
           "train": "training"}


class RichCallback(Callback):
    """A rich progress bar with the running loss and the last validation metric."""

    def __init__(self, console: Console, enabled: bool = True, metric: str = "accuracy") -> None:
        self.console, self.enabled, self.metric = console, enabled, metric
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 disable=not enabled, transient=False)
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
            self.task = self.progress.add_task(_PHASES["load"], total=None, loss="-", val="-")
        self.progress.update(self.task, description=_PHASES.get(name, name))

    def on_info(self, message: str) -> None:
        self.console.print(message)

    def on_train_begin(self, total_steps: int, trainable: int, total: int) -> None:
        self.progress.update(self.task, total=total_steps)
        self.console.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")

    def on_step(self, step: int, loss: float) -> None:
        self._loss = loss if math.isnan(self._loss) else 0.9 * self._loss + 0.1 * loss
        self.progress.update(self.task, completed=step, loss=f"{self._loss:.3f}")

    def on_evaluate(self, record: dict) -> None:
        value = record[f"val_{self.metric}"]
        self.progress.update(self.task, val=f"{self.metric} {100 * value:.2f}%")
        if not self.enabled:
            self.console.print(f"step {record['step']} (epoch {record['epoch']}): val {self.metric} "
                               f"{100 * value:.2f}%")


def summary_table(clf) -> Table:
    """Best validation metric, where it came from, time and speed (or the last state, without validation)."""
    m = clf.metrics_
    metric = clf.train_config.metric
    v = m["validation"]
    table = Table(title="training summary")
    columns = ("best val " + metric, "val accuracy", "val macro-F1", "best at") if v else ("validation", "kept")
    for column in columns + ("train time", "samples/s", "peak memory"):
        table.add_column(column, justify="right")
    if v:
        cells = (f"{100 * v[metric]:.2f}%", f"{100 * v['accuracy']:.2f}%", f"{100 * v['macro_f1']:.2f}%",
                 f"epoch {m['best_epoch']:g}, step {m['best_step']}" + (" (probe)" if m["best_step"] == 0 else ""))
    else:
        cells = ("none (trained on every row)", f"last state, step {m['best_step']}")
    table.add_row(*cells, f"{m['train_wall_seconds']:.1f} s", f"{m['train_samples_per_second']:.1f}",
                  f"{m['peak_memory_mb']:.0f} MiB")
    return table


def evaluation_tables(result: dict, max_classes: int = 15) -> list[Table]:
    """A headline table and a per-class table (worst F1 first) for ``lorafit evaluate``."""
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
    return [head, per] if max_classes else [head]


def info_table(manifest: dict, metrics: dict) -> Table:
    """A two-column overview of a run directory."""
    table = Table(show_header=False, title="lorafit run")
    labels = manifest["labels"]
    cfg, lora = manifest["train_config"], manifest["lora"]
    val = metrics.get("validation", {})
    rows = [("base model", f"{manifest['base_model']['name']} ({manifest['base_model'].get('hash', '?')})"),
            ("labels", f"{len(labels)}: " + ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")),
            ("pooling / max_length", f"{manifest['pooling']} / {manifest['max_length']}"),
            ("LoRA", f"r={lora['r']} alpha={lora['lora_alpha']} dropout={lora['lora_dropout']} "
                     f"targets={lora['target_modules'] or 'all linear'}"),
            ("training", f"epochs={cfg['epochs']} batch={cfg['batch_size']} lr={cfg['learning_rate']} "
                         f"precision={manifest.get('train_precision')}"),
            ("validation", ", ".join(f"{k} {100 * v:.2f}%" for k, v in val.items()) or "-"),
            ("train time", f"{metrics.get('train_wall_seconds', 0):.1f} s, "
                           f"{metrics.get('train_samples_per_second', 0):.1f} samples/s"),
            ("versions", ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()))]
    table.add_column()
    table.add_column()
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
                                 disable=not enabled, transient=False)
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
