"""The run report (report.html + report/*.png), its rebuild, ``evaluate --report``, the model card and the
training-time estimate, on the tiny model."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from browser import BrowserPage
from conftest import TINY_TRAIN
from helpers import make_texts, write_table
from lorafit.cli import app
from lorafit.report import FIGURES, PREDICTIONS_CSV, REPORT_DIR, REPORT_HTML, SECTIONS, confused_pairs, \
    reliability_bins

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def no_validation_run(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on every row (no validation data), so the evaluation sections have nothing to show."""
    from lorafit import Classifier

    texts, labels = make_texts(6, seed=7)
    clf = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1}).fit(texts, labels)  # auto: 6 per class -> 0
    return clf.save(tmp_path_factory.mktemp("novalid") / "run")


def _sections(page: str) -> dict[str, str]:
    """Section id -> its HTML, from the page."""
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, flags=re.S))


def test_train_writes_a_report_with_every_section(run_dir: Path) -> None:
    page = (run_dir / REPORT_HTML).read_text(encoding="utf-8")
    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    for key, title in SECTIONS.items():
        assert f"<h2>{title}</h2>" in sections[key]
    for key in FIGURES:  # every figure is embedded in its section
        assert 'src="data:image/png;base64,' in sections[key], key
    assert "<table>" in sections["mistakes"] or "No mistakes" in sections["mistakes"]
    assert "validation data:" in sections["summary"]
    assert not re.search(r'(src|href)="(https?:|//)', page)  # nothing external: it opens offline


def test_report_figures_are_valid_png_files(run_dir: Path) -> None:
    from PIL import Image

    for name in FIGURES.values():
        data = (run_dir / REPORT_DIR / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(run_dir / REPORT_DIR / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_stored_validation_predictions_match_the_model(run_dir: Path, trained) -> None:
    import pandas as pd

    stored = pd.read_csv(run_dir / REPORT_DIR / PREDICTIONS_CSV, dtype={"label": str, "predicted": str},
                         keep_default_na=False)
    assert list(stored.columns) == ["text", "label", "predicted", "confidence"]
    assert len(stored) == trained.data_summary["validation"]["rows"]
    probabilities = trained.predict_proba(stored["text"].tolist())
    assert stored["predicted"].tolist() == trained.predict(stored["text"].tolist())
    assert np.allclose(stored["confidence"], probabilities.max(1), atol=1e-5)
    accuracy = float((stored["label"] == stored["predicted"]).mean())
    assert accuracy == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["validation"]["accuracy"])


def test_report_renders_in_chromium_without_errors(run_dir: Path, browser_page: BrowserPage) -> None:
    page = browser_page.page
    page.goto((run_dir / REPORT_HTML).as_uri())
    page.wait_for_load_state("load")
    for key, title in SECTIONS.items():
        assert page.locator(f"#{key} h2").text_content() == title
    widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == len(FIGURES) and all(w > 0 for w in widths), widths
    assert browser_page.errors == []


def test_report_without_validation_data_says_so(no_validation_run: Path) -> None:
    page = (no_validation_run / REPORT_HTML).read_text(encoding="utf-8")
    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    for key in ("confusion", "f1", "reliability", "mistakes"):
        assert "No evaluation data" in sections[key] and "<img" not in sections[key]
    assert "<img" in sections["history"] and "<img" in sections["distribution"]
    assert not (no_validation_run / REPORT_DIR / PREDICTIONS_CSV).exists()
    assert sorted(p.name for p in (no_validation_run / REPORT_DIR).iterdir()) == \
        sorted([FIGURES["history"], FIGURES["distribution"]])


def test_a_failing_report_does_not_cost_the_model(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from lorafit import plots

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("no figures today")

    monkeypatch.setattr(plots, "confusion_png", broken)
    run = trained.save(tmp_path / "run")
    assert (run / "adapter_model.safetensors").is_file() and (run / REPORT_DIR / PREDICTIONS_CSV).is_file()
    assert not (run / REPORT_HTML).exists()
    assert "no figures today" in caplog.text and "lorafit report" in caplog.text
    monkeypatch.undo()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0 and (run / REPORT_HTML).is_file()


def test_report_command_rebuilds_the_report(run_copy: Path) -> None:
    before = (run_copy / REPORT_HTML).read_text(encoding="utf-8")
    (run_copy / REPORT_HTML).unlink()
    (run_copy / REPORT_DIR / FIGURES["confusion"]).unlink()
    result = runner.invoke(app, ["report", str(run_copy)])
    assert result.exit_code == 0, result.output
    assert str(run_copy / REPORT_HTML) in "".join(result.output.split())  # rich may wrap the long path
    after = (run_copy / REPORT_HTML).read_text(encoding="utf-8")
    assert _sections(after).keys() == _sections(before).keys()
    assert (run_copy / REPORT_DIR / FIGURES["confusion"]).read_bytes().startswith(PNG_SIGNATURE)
    # The mistakes table is drawn from the stored predictions, so it is the same as at training.
    assert _sections(after)["mistakes"] == _sections(before)["mistakes"]


def test_evaluate_writes_a_report_for_any_labeled_file(run_dir: Path, tmp_path: Path) -> None:
    texts, labels = make_texts(5, seed=11)
    texts, labels = texts + ["pizza tax form"], labels + ["taxes"]  # a label the model never saw
    data = write_table(tmp_path / "test.jsonl", {"text": texts, "label": labels})
    out = tmp_path / "reports" / "test_report.html"
    result = runner.invoke(app, ["evaluate", str(run_dir), str(data), "--report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    sections = _sections(out.read_text(encoding="utf-8"))
    assert list(sections) == list(SECTIONS)
    assert "test.jsonl, 16 rows" in sections["summary"]
    assert "taxes" in sections["mistakes"]  # the unknown label's row is a mistake
    assert not any(p.suffix == ".png" for p in out.parent.iterdir())  # one self-contained file


def test_evaluate_report_needs_an_html_name(run_dir: Path, tmp_path: Path) -> None:
    data = write_table(tmp_path / "d.csv", {"text": ["pizza bread"], "label": ["food"]})
    result = runner.invoke(app, ["evaluate", str(run_dir), str(data), "--report", str(tmp_path / "r.png")])
    assert result.exit_code != 0 and "html" in str(result.exception)


def test_reliability_bins_and_confused_pairs() -> None:
    confidence = np.array([0.05, 0.35, 0.35, 0.95, 1.0])
    correct = np.array([False, True, False, True, True])
    bins, ece = reliability_bins(confidence, correct, n_bins=10)
    assert [b["count"] for b in bins] == [1, 0, 0, 2, 0, 0, 0, 0, 0, 2]
    assert bins[3]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.975)
    assert ece == pytest.approx((0.05 + 2 * 0.15 + 2 * 0.025) / 5)
    matrix = np.array([[5, 3, 0], [1, 4, 0], [0, 2, 8]])
    pairs = confused_pairs(matrix, ["a", "b", "c"], k=2)
    assert pairs == [("a", "b", 3, 3 / 8), ("c", "b", 2, 0.2)]


def test_odd_label_names_and_texts_are_drawn_and_escaped() -> None:
    from lorafit.report import Predictions, ReportInputs, render_html

    labels = ["cost $5", "[b]", "<script>alert(1)</script>"]
    manifest = {"labels": labels, "base_model": {"name": "tiny"}, "max_length": 16,
                "data": {"train": {"label_counts": {label: 3 for label in labels}}}}
    predictions = Predictions(["a $ b", "<b>x</b>", "[red]y"], labels, [labels[1], labels[0], labels[0]],
                              np.array([0.9, 0.5, 0.7]))
    page, figures = render_html(ReportInputs(manifest, {"history": []}, predictions, "crafted data"))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "[red]y" in page
    assert set(figures) == set(FIGURES.values()) and all(p.startswith(PNG_SIGNATURE) for p in figures.values())


def test_model_card_names_data_labels_settings_metrics_and_loading(run_dir: Path) -> None:
    card = (run_dir / "README.md").read_text(encoding="utf-8")
    manifest = json.loads((run_dir / "lorafit.json").read_text())
    for heading in ("## Data", "## Labels (3)", "## Settings", "## Metrics", "## Intended use and limitations",
                    "## How to load"):
        assert heading in card, heading
    val = manifest["data"]["validation"]
    assert f"on the validation data ({val['source']}, {val['rows']} rows)" in card
    assert f"max_length={manifest['max_length']}" in card and "`food`, `music`, `sports`" in card
    assert "Classifier.load" in card and "PeftModel.from_pretrained(base, run)" in card


def test_time_estimate_and_loss_curve(tiny_model: str) -> None:
    from lorafit import Classifier
    from lorafit.training import ESTIMATE_STEPS, Callback

    estimates = []

    class Recorder(Callback):
        def on_estimate(self, seconds: float, measured_steps: int) -> None:
            estimates.append((seconds, measured_steps))

    texts, labels = make_texts(30, seed=0)
    clf = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 2}).fit(texts, labels, callback=Recorder())
    assert clf.metrics_["steps"] > ESTIMATE_STEPS + 1
    m = clf.metrics_
    assert len(estimates) == 1 and estimates[0][1] == ESTIMATE_STEPS and estimates[0][0] > 0
    assert m["estimated_train_seconds"] == estimates[0][0]
    assert [point[0] for point in m["loss_curve"]] == list(range(1, m["steps"] + 1))  # few steps: one per point
    assert m["train_samples_per_second"] > 0
