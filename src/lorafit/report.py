"""The run report: one self-contained ``report.html`` (figures embedded as base64 PNG, no external
assets, opens offline) plus the same figures as PNG files.

``train`` writes ``RUN/report.html`` and ``RUN/report/*.png`` from the kept checkpoint's predictions on
the validation data, which it also stores in ``RUN/report/validation_predictions.csv`` (text, label,
predicted, confidence; text_pair after text for a run on pairs) so ``lorafit report RUN`` can rebuild the
report without a model.
``lorafit evaluate RUN DATA --report FILE.html`` writes the same report for any labeled file.
"""
from __future__ import annotations

import base64
import html
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lorafit import metrics, plots
from lorafit.data import Text, is_pairs, pair_up
from lorafit.inference import softmax
from lorafit.config import SINGLE_LABEL
from lorafit.rundir import current_umask, predict_length_of
from lorafit.tasks import format_metric

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_DIR = "report"
PREDICTIONS_CSV = "validation_predictions.csv"
SECTIONS = {"summary": "Summary", "history": "Training history", "confusion": "Confusion matrix",
            "f1": "Per-class F1", "distribution": "Class distribution", "reliability": "Reliability",
            "mistakes": "Most confident mistakes"}
"""Section ids and headings, in page order (tests check every one is there)."""
FIGURES = {"history": "training_history.png", "confusion": "confusion_matrix.png", "f1": "per_class_f1.png",
           "distribution": "class_distribution.png", "reliability": "reliability.png"}
CONFUSED_PAIRS = 15
MISTAKES = 20
RELIABILITY_BINS = 10


@dataclass
class Predictions:
    """Predictions on labeled data: the rows the evaluation sections of the report are drawn from."""

    texts: list[Text]
    labels: list[str]
    """True labels."""
    predicted: list[str]
    confidence: np.ndarray
    """Probability of the predicted label (softmax at the run's calibration temperature)."""

    @classmethod
    def from_probabilities(cls, texts: list[str], labels: list[str], probabilities: np.ndarray,
                           classes: list[str]) -> "Predictions":
        best = probabilities.argmax(1) if len(probabilities) else np.zeros(0, dtype=int)
        return cls(list(texts), [str(x) for x in labels], [classes[i] for i in best],
                   probabilities.max(1) if len(probabilities) else np.zeros(0))

    @classmethod
    def from_logits(cls, texts: list[str], labels: list[str], logits: np.ndarray, classes: list[str],
                    temperature: float = 1.0) -> "Predictions":
        return cls.from_probabilities(texts, labels, softmax(logits, temperature), classes)

    def write_csv(self, path: Path) -> None:
        texts = {"text": [a for a, _ in self.texts], "text_pair": [b for _, b in self.texts]} \
            if is_pairs(self.texts) else {"text": self.texts}
        pd.DataFrame({**texts, "label": self.labels, "predicted": self.predicted,
                      "confidence": self.confidence}).to_csv(path, index=False)

    @classmethod
    def read_csv(cls, path: Path) -> "Predictions":
        frame = pd.read_csv(path, dtype={"text": str, "text_pair": str, "label": str, "predicted": str},
                            keep_default_na=False)
        texts = frame["text"].tolist()
        if "text_pair" in frame:
            texts = pair_up(texts, frame["text_pair"].tolist())
        return cls(texts, frame["label"].tolist(), frame["predicted"].tolist(),
                   frame["confidence"].to_numpy(dtype=float))


@dataclass
class ReportInputs:
    """Everything a report is drawn from."""

    manifest: dict
    metrics: dict
    predictions: Predictions | None
    """Predictions on the evaluation data (the validation data after training), or None."""
    evaluation_name: str
    """What the evaluation data is, in words (e.g. ``validation data: train.csv (stratified 10% split)``)."""
    title: str = "lorafit run report"


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = RELIABILITY_BINS
                     ) -> tuple[list[dict], float]:
    """Equal-width confidence bins (count, mean confidence, accuracy) and the expected calibration error.

    Example:
        >>> bins, ece = reliability_bins(np.array([0.95, 0.95]), np.array([True, False]))
        >>> bins[-1]["count"], round(ece, 2)
        (2, 0.45)
    """
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        conf = float(confidence[mask].mean()) if count else 0.0
        acc = float(correct[mask].mean()) if count else 0.0
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count, "confidence": conf,
                     "accuracy": acc})
        ece += count * abs(conf - acc)
    return bins, ece / max(1, len(confidence))


def confused_pairs(matrix: np.ndarray, labels: list[str], k: int = CONFUSED_PAIRS) -> list[tuple[str, str, int, float]]:
    """The ``k`` largest off-diagonal cells: (true, predicted, rows, share of the true class's rows)."""
    off = matrix.astype(float).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    totals = matrix.sum(axis=1)
    pairs = []
    for flat in order:
        i, j = np.unravel_index(flat, matrix.shape)
        if off[i, j] > 0:
            pairs.append((labels[i], labels[j], int(matrix[i, j]), float(matrix[i, j] / max(1, totals[i]))))
    return pairs


# ------------------------------------------------------------------------------------------- HTML
def _table(header: list[str] | None, rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header or [])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" data-file="{name}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _summary(inputs: ReportInputs) -> str:
    m, meta = inputs.metrics, inputs.manifest
    data = meta.get("data", {})
    val = m.get("validation") or {}
    rows = [["base model", meta["base_model"].get("name", "?")], ["labels", len(meta["labels"])],
            ["max_length", f"{meta['max_length']} tokens" + (" (auto)" if meta.get("max_length_auto") else "")],
            ["predict_max_length", f"{predict_length_of(meta)} tokens"
                                   + (" (auto)" if meta.get("predict_max_length_auto") else "")]]
    if meta.get("text_pairs"):
        rows.append(["input", f"text pairs: {meta.get('text_column')} + {meta.get('text_pair_column')}"])
    for split in ("train", "validation", "test"):
        if data.get(split):
            rows.append([f"{split} data", f"{data[split].get('source', '?')}: {data[split].get('rows', '?')} rows"])
    rows += [["evaluation data of this report", inputs.evaluation_name],
             ["validation accuracy / macro-F1 (kept checkpoint)", f"{_pct(val.get('accuracy'))} / {_pct(val.get('macro_f1'))}"]
             if meta.get("task", SINGLE_LABEL) == SINGLE_LABEL else
             [f"validation metrics of {meta['task']} (kept checkpoint)",
              ", ".join(f"{k} {format_metric(k, v)}" for k, v in val.items()) or "-"],
             ["training time", f"{m.get('train_wall_seconds', 0):.1f} s at {m.get('train_samples_per_second', 0):.1f} samples/s"
              + (f" (estimated {m['estimated_train_seconds']:.0f} s after the first steps)" if m.get("estimated_train_seconds") else "")],
             ["calibration temperature", meta.get("calibration", {}).get("temperature", 1.0)]]
    warnings = (meta.get("data_check") or {}).get("warnings") or []
    listed = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return _table(None, rows) + (f"<h3>Data warnings</h3><ul>{listed}</ul>" if listed else "")


def _sections(inputs: ReportInputs) -> tuple[dict[str, str], dict[str, bytes]]:
    """HTML body of every section, and the PNG bytes of every figure drawn."""
    meta, m, p = inputs.manifest, inputs.metrics, inputs.predictions
    labels = list(meta["labels"])
    body, pngs = {"summary": _summary(inputs)}, {}
    pngs["history"] = plots.history_png(m.get("history", []), m.get("loss_curve", []),
                                        meta.get("train_config", {}).get("metric", "accuracy"))
    train_counts = (meta.get("data", {}).get("train") or {}).get("label_counts", {})
    eval_counts = dict(Counter(p.labels)) if p else None
    shown = labels + sorted(set(eval_counts or {}) - set(labels))
    name = "validation data" if inputs.evaluation_name.startswith("validation") else "evaluation data"
    if train_counts or meta.get("task", SINGLE_LABEL) == SINGLE_LABEL:
        pngs["distribution"] = plots.distribution_png(shown, train_counts, eval_counts, name)
    if meta.get("task", SINGLE_LABEL) != SINGLE_LABEL:
        skipped = _note(f"Drawn for single-label runs only; this run is {meta['task']}: `lorafit evaluate RUN_DIR "
                        "DATA` gives its metrics (per label for multi-label).")
        body.update({key: skipped for key in ("confusion", "f1", "reliability", "mistakes", "distribution")})
    elif p is None or not p.texts:
        missing = _note(f"No evaluation data ({inputs.evaluation_name}), so there is nothing to measure here; "
                        "`lorafit evaluate RUN_DIR DATA --report FILE.html` draws this for a labeled file.")
        body.update({key: missing for key in ("confusion", "f1", "reliability", "mistakes")})
    else:
        _evaluation_sections(p, shown, meta, body, pngs)
    for key, png in pngs.items():
        body[key] = _img(FIGURES[key], png, SECTIONS[key]) + body.get(key, "")
    body["history"] += _note("Loss: the mean over windows of steps (line) and since the previous evaluation (dots); "
                             "validation metrics at every evaluation (step 0: the probe-initialised head).")
    return body, pngs


def _evaluation_sections(p: Predictions, labels: list[str], meta: dict, body: dict, pngs: dict) -> None:
    result = metrics.report(p.labels, p.predicted, labels)
    matrix = np.array(result["confusion_matrix"])
    present = {k: v["f1"] for k, v in result["per_class"].items() if v["support"]}
    pngs["confusion"] = plots.confusion_png(matrix, labels)
    pairs = confused_pairs(matrix, labels)
    body["confusion"] = ("<h3>Most confused pairs</h3>" + _table(
        ["true", "predicted as", "rows", "share of true class"], [[a, b, n, f"{100 * s:.1f}%"] for a, b, n, s in pairs])
        if pairs else _note("No confusions: every row was predicted right."))
    pngs["f1"] = plots.f1_png(present)
    body["f1"] = _note(f"accuracy {_pct(result['accuracy'])}, macro-F1 {_pct(result['macro_f1'])} on {len(p.texts)} rows")
    correct = np.array([a == b for a, b in zip(p.labels, p.predicted)])
    bins, ece = reliability_bins(p.confidence, correct)
    temperature = float(meta.get("calibration", {}).get("temperature", 1.0))
    pngs["reliability"] = plots.reliability_png(bins, ece, temperature)
    body["reliability"] = _note(f"Expected calibration error {100 * ece:.2f}% at temperature {temperature:g}: "
                                "bars under the diagonal mean the model is more confident than it is right.")
    wrong = np.flatnonzero(~correct)
    worst = wrong[np.argsort(-p.confidence[wrong], kind="stable")][:MISTAKES]
    body["mistakes"] = _table(["text ‖ text pair" if is_pairs(p.texts) else "text", "true", "predicted", "confidence"],
                              [[_shown(p.texts[i]), p.labels[i], p.predicted[i], f"{p.confidence[i]:.3f}"]
                               for i in worst]) \
        if len(worst) else _note("No mistakes on the evaluation data.")


def _shown(text: Text) -> str:
    """A text as the report shows it; a pair as both texts with a marked boundary."""
    return f"{text[0]} ‖ {text[1]}" if isinstance(text, tuple) else text


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;height:auto;display:block;margin:1em 0}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.note{color:#555}nav a{margin-right:1em}"""


def render_html(inputs: ReportInputs) -> tuple[str, dict[str, bytes]]:
    """The report page and its figures as ``{file name: PNG bytes}``."""
    body, pngs = _sections(inputs)
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title in SECTIONS.items())
    sections = "".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>{body[key]}</section>'
                       for key, title in SECTIONS.items())
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(inputs.title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(inputs.title)}</h1><nav>{nav}</nav>"
            f"{sections}</body></html>\n")
    return page, {FIGURES[key]: png for key, png in pngs.items()}


# ------------------------------------------------------------------------------------------ files
def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary sibling renamed into place)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(html_path: str | Path, inputs: ReportInputs, figures_dir: str | Path | None = None) -> Path:
    """Write the page to ``html_path`` and, when ``figures_dir`` is given, each figure as a PNG there."""
    html_path = Path(html_path)
    page, figures = render_html(inputs)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        figures_dir.mkdir(parents=True, exist_ok=True)
        for name, png in figures.items():
            _replace(figures_dir / name, png)
    _replace(html_path, page.encode("utf-8"))
    logger.info("wrote the report %s", html_path)
    return html_path


def validation_name(manifest: dict) -> str:
    """The run's validation data in words, as the report names its evaluation data."""
    val = (manifest.get("data") or {}).get("validation")
    if not val:
        return "none: the run trained on every row (no validation data)"
    return f"validation data: {val.get('source', '?')}, {val.get('rows', '?')} rows"


def write_run_report(run_dir: str | Path, manifest: dict, metrics_: dict, predictions: Predictions | None) -> Path:
    """The report of a run directory: ``report.html``, ``report/*.png`` and the predictions it is drawn from."""
    run_dir = Path(run_dir)
    figures = run_dir / REPORT_DIR
    figures.mkdir(exist_ok=True)
    if predictions is not None:
        predictions.write_csv(figures / PREDICTIONS_CSV)
    inputs = ReportInputs(manifest, metrics_, predictions, validation_name(manifest),
                          title=f"lorafit run report: {run_dir.name}")
    return write_report(run_dir / REPORT_HTML, inputs, figures)


def rebuild_run_report(run_dir: str | Path) -> Path:
    """Draw a run directory's report again from its stored files (no model needed); returns its path."""
    from lorafit.rundir import read_manifest, read_metrics

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    stored = run_dir / REPORT_DIR / PREDICTIONS_CSV
    predictions = Predictions.read_csv(stored) if stored.is_file() else None
    name = validation_name(manifest)
    single = manifest.get("task", SINGLE_LABEL) == SINGLE_LABEL  # only single-label runs store predictions
    if predictions is None and manifest.get("data", {}).get("validation") and single:
        name += f" (its predictions are not stored: {stored} is missing)"
        logger.warning("%s is missing; the report's evaluation sections stay empty", stored)
    inputs = ReportInputs(manifest, read_metrics(run_dir), predictions, name,
                          title=f"lorafit run report: {run_dir.resolve().name}")
    return write_report(run_dir / REPORT_HTML, inputs, run_dir / REPORT_DIR)
