"""Multi-label classification and regression (lorafit.tasks): config, label cells, training, the run
directory (save/load and plain transformers + peft), evaluate/predict, the CLI and the service."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN
from helpers import make_multilabel, make_regression, write_table
from test_plain_peft import plain_logits

from lorafit import Classifier
from lorafit.cli import main
from lorafit.config import DataConfig, TrainConfig
from lorafit.errors import ConfigError, DataError
from lorafit.tasks import MultiLabel, Regression, _best_f1_threshold, format_metric

TEXTS = ["pizza bread and the guitar", "a goal for the team", "cheese soup", "we saw the old piano"]


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ml_data() -> tuple[list[str], list[list[str]]]:
    return make_multilabel(120, seed=0)


@pytest.fixture(scope="module")
def ml_clf(tiny_model: str, ml_data) -> Classifier:
    """A multi-label classifier with validation data (thresholds tuned on it), its head from the probe."""
    texts, sets = ml_data
    return Classifier(model=tiny_model, task="multi-label", **TINY_TRAIN).fit(texts, sets,
                                                                              validation=make_multilabel(40, seed=1))


@pytest.fixture(scope="module")
def ml_run(ml_clf: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ml_clf.save(tmp_path_factory.mktemp("runs") / "multi")


@pytest.fixture(scope="module")
def reg_clf(tiny_model: str) -> Classifier:
    """A regression run trained on every row (the last state is kept) with the probe-initialised head."""
    texts, values = make_regression(120, seed=0)
    return Classifier(model=tiny_model, task="regression", validation_fraction=0, **TINY_TRAIN).fit(texts, values)


@pytest.fixture(scope="module")
def reg_run(reg_clf: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reg_clf.save(tmp_path_factory.mktemp("runs") / "regression")


# --------------------------------------------------------------------------------------------- config
def test_task_names_and_aliases() -> None:
    assert TrainConfig(task="multi-label").task == "multi_label_classification"
    assert TrainConfig(task="classification").task == "single_label_classification"
    assert TrainConfig(task="regression").task == "regression"
    assert TrainConfig().metric == "auto"


@pytest.mark.parametrize("settings, match", [
    ({"task": "ranking"}, "task must be one of"),
    ({"task": "multi-label", "metric": "accuracy"}, "micro_f1, macro_f1, subset_accuracy"),
    ({"task": "regression", "metric": "macro_f1"}, "mse, mae, pearson, spearman"),
    ({"task": "regression", "class_weights": "auto"}, "class_weights 'auto' has no meaning for regression"),
    ({"task": "multi-label", "abstain": True}, "single_label_classification only"),
    ({"task": "regression", "threshold": 0.5}, "single_label_classification only"),
])
def test_bad_task_settings_are_config_errors(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**settings)


@pytest.mark.parametrize("delimiter", ["", " |", "[", '"', "a\n", "]x"])
def test_bad_label_delimiters_are_refused(delimiter: str) -> None:
    with pytest.raises(ConfigError, match="label_delimiter"):
        DataConfig(label_delimiter=delimiter)


# -------------------------------------------------------------------------------------- label cells
def test_multilabel_cells_parse_delimited_and_json_lists() -> None:
    task = MultiLabel(",")
    assert task.parse(" b , a ,b") == ["b", "a"]
    assert task.parse('["x, y", "z"]') == ["x, y", "z"]
    assert task.parse("") == [] and task.parse("[]") == []
    assert task.classes(["b,a", "", '["c"]'], "label") == ["a", "b", "c"]
    np.testing.assert_array_equal(task.encode(["b", "", "a,c"], ["a", "b"]), [[0, 1], [0, 0], [1, 0]])
    with pytest.raises(DataError, match=r"line 3 \('\[a'\).*not a JSON list"):
        task.check_cells(["a", "[a"], "train.csv", first_line=2)


def test_multilabel_files_take_jsonl_lists_and_empty_cells(tmp_path: Path) -> None:
    from lorafit.data import read_labeled

    for suffix in ("jsonl", "parquet"):
        path = write_table(tmp_path / f"t.{suffix}", {"text": ["a", "b", "c"], "label": [["x", "y"], [], ["y"]]})
        data = read_labeled(path, task=MultiLabel("|"))
        assert MultiLabel("|").label_counts(data.labels) == {"x": 1, "y": 2}, suffix
    csv = write_table(tmp_path / "t.csv", {"text": ["a", "b"], "label": ["x|y", ""]})
    assert read_labeled(csv, task=MultiLabel("|")).labels == ["x|y", ""]
    with pytest.raises(DataError, match="empty 'label'"):  # single-label still refuses an empty label
        read_labeled(csv)


def test_regression_targets_must_be_finite_numbers(tmp_path: Path) -> None:
    from lorafit.data import read_labeled

    path = write_table(tmp_path / "t.csv", {"text": list("abcd"), "label": ["1.5", "high", "nan", "-inf"]})
    with pytest.raises(DataError, match=r"3 row\(s\) of t.csv: line 3 \('high'\), line 4 \('nan'\), line 5"):
        read_labeled(path, task=Regression())
    with pytest.raises(DataError, match="same value"):
        Classifier(task="regression").fit(["a", "b"], [1.0, 1.0])
    with pytest.raises(DataError, match=r"row 2 \('x'\)"):
        Classifier(task="regression").fit(["a", "b"], [1.0, "x"])


def test_threshold_tuning_maximises_f1() -> None:
    scores, truth = np.array([0.9, 0.8, 0.3, 0.2, 0.1]), np.array([1, 1, 1, 0, 0])
    assert _best_f1_threshold(scores, truth) == pytest.approx(0.25)  # all three positives, no negative
    assert _best_f1_threshold(scores, np.zeros(5)) == 0.5  # no positives: nothing to tune
    assert _best_f1_threshold(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0])) == pytest.approx(0.3)  # ties kept


def test_class_weights_and_metric_formats() -> None:
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(MultiLabel("|").class_weights(targets, 3), [1.0, 3.0, 1.0])
    assert format_metric("micro_f1", 0.5) == "50.00%" and format_metric("mse", 2.0) == "2"


# ------------------------------------------------------------------------------------------ multi-label
def test_multilabel_training_tunes_thresholds_and_predicts_label_lists(ml_clf: Classifier, ml_data) -> None:
    assert ml_clf.train_config.metric == "micro_f1" and ml_clf.classes_ == ["food", "music", "sports"]
    assert ml_clf.metrics_["validation"]["micro_f1"] > 0.6
    assert len(ml_clf.task.thresholds) == 3 and all(0 < t < 1 for t in ml_clf.task.thresholds)
    probs = ml_clf.predict_proba(TEXTS)
    assert probs.shape == (4, 3) and ((probs > 0) & (probs < 1)).all()
    predicted = ml_clf.predict(TEXTS)
    assert all(isinstance(p, list) for p in predicted)
    assert predicted == [[c for c, p, t in zip(ml_clf.classes_, row, ml_clf.task.thresholds) if p >= t] for row in probs]
    assert ml_clf.predict(TEXTS, threshold=0.0) == [ml_clf.classes_] * 4


def test_multilabel_evaluate(ml_clf: Classifier) -> None:
    texts, sets = make_multilabel(30, seed=2)
    result = ml_clf.evaluate(texts, sets + [])
    assert {"micro_f1", "macro_f1", "subset_accuracy", "per_label", "n"} <= set(result)
    assert result["per_label"]["food"]["threshold"] == ml_clf.task.thresholds[0]
    assert ml_clf.evaluate(texts[:1], [["food", "jazz"]])["unknown_labels"] == ["jazz"]


def test_multilabel_round_trip_and_plain_peft(ml_clf: Classifier, ml_run: Path) -> None:
    manifest = json.loads((ml_run / "lorafit.json").read_text())
    assert manifest["task"] == "multi_label_classification"
    assert manifest["task_settings"]["thresholds"] == ml_clf.task.thresholds
    loaded = Classifier.load(ml_run)
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), ml_clf.predict_proba(TEXTS), atol=1e-6)
    assert loaded.predict(TEXTS) == ml_clf.predict(TEXTS)
    plain = plain_logits(str(ml_run), TEXTS).sigmoid().numpy()
    np.testing.assert_allclose(plain, loaded.predict_proba(TEXTS), atol=1e-5)
    card = (ml_run / "README.md").read_text()
    assert "sigmoid" in card and "micro_f1" in card


@pytest.mark.parametrize("which", ["ml_run", "reg_run"])
def test_reports_draw_what_fits(which: str, request: pytest.FixtureRequest) -> None:
    from lorafit.report import rebuild_run_report

    run = request.getfixturevalue(which)
    page = rebuild_run_report(run).read_text()  # raises where a figure fails (train only logs it)
    assert (run / "report" / "training_history.png").is_file() and "Drawn for single-label runs only" in page
    assert not (run / "report" / "confusion_matrix.png").exists()


# ------------------------------------------------------------------------------------------- regression
def test_regression_answers_in_the_targets_units(reg_clf: Classifier) -> None:
    texts, values = make_regression(60, seed=3)
    predicted = np.array(reg_clf.predict(texts))
    assert abs(predicted.mean() - np.mean(values)) < 1.5  # not standardised: the scale is folded into the head
    result = reg_clf.evaluate(texts, values)
    assert set(result) == {"mse", "mae", "rmse", "pearson", "spearman", "n"}
    assert result["pearson"] > 0.5 and result["rmse"] == pytest.approx(result["mse"] ** 0.5)
    with pytest.raises(ConfigError, match="predict_proba is for classification"):
        reg_clf.predict_proba(texts)


def test_regression_round_trip_and_plain_peft(reg_clf: Classifier, reg_run: Path) -> None:
    manifest = json.loads((reg_run / "lorafit.json").read_text())
    assert manifest["task"] == "regression" and manifest["labels"] == ["label"]
    assert manifest["task_settings"]["folded_into_head"] and manifest["task_settings"]["target_std"] > 0
    loaded = Classifier.load(reg_run)
    np.testing.assert_allclose(loaded.predict(TEXTS), reg_clf.predict(TEXTS), atol=1e-5)
    plain = plain_logits(str(reg_run), TEXTS)[:, 0].numpy()
    np.testing.assert_allclose(plain, loaded.predict(TEXTS), atol=1e-4)
    card = (reg_run / "README.md").read_text()
    assert "model.classifier(pooled)[:, 0]" in card
    assert "clf.predict(" in card and "predict_proba" not in card  # no probabilities to show for a number


def test_holdout_splits_at_random_for_the_new_tasks(tiny_model: str) -> None:
    texts, values = make_regression(200, seed=4)
    clf = Classifier(model=tiny_model, task="regression", metric="pearson", **{**TINY_TRAIN, "epochs": 1})
    clf.fit(texts, values)  # auto: a 10% split has 20 rows, so validation is held out
    assert clf.data_summary["validation"]["rows"] == 20 and "random 10% split" in clf.data_summary["validation"]["source"]
    assert clf.metrics_["best_step"] >= 0 and "pearson" in clf.metrics_["validation"]


# ------------------------------------------------------------------------------------------------- CLI
def _run(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def ml_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, sets = make_multilabel(60, seed=5)
    values = make_regression(60, seed=5)[1]
    return write_table(tmp_path_factory.mktemp("data") / "ml.csv",
                       {"text": texts, "tags": [",".join(s) for s in sets], "value": values})


def test_cli_multilabel_train_evaluate_predict(ml_csv: Path, tiny_model: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    common = ["--model", tiny_model, "--epochs", "1", "--min-steps", "0", "--no-progress", "--precision", "fp32"]
    code, _, err = _run(capsys, ["train", str(ml_csv), "-o", str(tmp_path / "run"), "--multi-label",
                                 "--label-column", "tags", "--label-delimiter", ",", "--class-weights", "auto", *common])
    assert code == 0, err
    code, out, _ = _run(capsys, ["evaluate", str(tmp_path / "run"), str(ml_csv), "--json"])
    assert code == 0 and {"micro_f1", "macro_f1", "subset_accuracy", "per_label"} <= set(json.loads(out))
    code, out, _ = _run(capsys, ["predict", str(tmp_path / "run"), "pizza bread"])
    record = json.loads(out)
    assert code == 0 and set(record) == {"text", "labels", "scores"} and set(record["scores"]) == {"food", "music", "sports"}
    code, _, _ = _run(capsys, ["predict", str(tmp_path / "run"), "-i", str(ml_csv), "--output", str(tmp_path / "p.csv")])
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert code == 0 and header == "text,labels,p_food,p_music,p_sports"


def test_cli_regression_train_evaluate_predict(ml_csv: Path, tiny_model: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    common = ["--model", tiny_model, "--epochs", "1", "--min-steps", "0", "--no-progress", "--precision", "fp32"]
    code, _, err = _run(capsys, ["train", str(ml_csv), "-o", str(tmp_path / "run"), "--task", "regression",
                                 "--label-column", "value", *common])
    assert code == 0, err
    code, out, _ = _run(capsys, ["evaluate", str(tmp_path / "run"), str(ml_csv), "--json"])
    assert code == 0 and {"mse", "mae", "rmse", "pearson", "spearman"} <= set(json.loads(out))
    code, out, _ = _run(capsys, ["evaluate", str(tmp_path / "run"), str(ml_csv)])
    assert code == 0 and "spearman" in out
    code, out, _ = _run(capsys, ["predict", str(tmp_path / "run"), "pizza bread"])
    assert code == 0 and isinstance(json.loads(out)["value"], float)
    code, _, err = _run(capsys, ["predict", str(tmp_path / "run"), "pizza", "--threshold", "0.5"])
    assert code == 1 and "threshold applies to classification" in err


@pytest.mark.parametrize("flags, message", [
    (["--task", "ranking"], "task must be one of"),
    (["--multi-label", "--task", "regression"], "--multi-label contradicts --task regression"),
    (["--multi-label", "--label-delimiter", " "], "label_delimiter must be"),
    (["--multi-label", "--metric", "accuracy"], "metric must be one of micro_f1"),
    (["--task", "regression", "--abstain"], "single_label_classification only"),
    (["--task", "regression", "--class-weights", "auto"], "no meaning for regression"),
])
def test_cli_bad_task_flags(ml_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
                            message: str) -> None:
    code, _, err = _run(capsys, ["train", str(ml_csv), "-o", str(tmp_path / "run"), "--label-column", "tags", *flags])
    assert code == 1 and message in err and not (tmp_path / "run").exists()


def test_cli_regression_target_that_is_text(tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture) -> None:
    path = write_table(tmp_path / "t.csv", {"text": ["a b", "c d", "e f"], "label": ["1", "2", "lots"]})
    code, _, err = _run(capsys, ["train", str(path), "-o", str(tmp_path / "run"), "--task", "regression",
                                 "--model", tiny_model])
    assert code == 1 and "line 4 ('lots')" in err and not (tmp_path / "run").exists()


def test_cli_inspect_multilabel(ml_csv: Path, tiny_model: str, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _run(capsys, ["inspect", str(ml_csv), "--multi-label", "--label-column", "tags",
                                   "--label-delimiter", ",", "--model", tiny_model])
    assert code == 0, err
    assert "food" in out and "food,music" not in out  # rows per label, not per label set


# --------------------------------------------------------------------------------------------- export
def test_merged_export_carries_problem_type_for_pipelines(ml_run: Path, reg_run: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    from lorafit.export import export_merged

    for run, problem_type in ((ml_run, "multi_label_classification"), (reg_run, "regression")):
        out = export_merged(run, tmp_path / run.name)
        assert json.loads((out / "config.json").read_text())["problem_type"] == problem_type
        results = pipeline("text-classification", model=str(out), trust_remote_code=True)(TEXTS, top_k=None,
                                                                                           truncation=True)
        loaded = Classifier.load(run)
        scores = np.array([[{r["label"]: r["score"] for r in result}[c] for c in loaded.classes_] for result in results])
        expected = loaded.predict_proba(TEXTS) if run == ml_run else np.array(loaded.predict(TEXTS))[:, None]
        np.testing.assert_allclose(scores, expected, atol=1e-4)  # sigmoid for multi-label, no function for regression


def test_exports_predict_as_the_run(ml_run: Path, reg_run: Path, tmp_path: Path) -> None:
    from lorafit.export import export
    from lorafit.exported import load_predictor

    for run in (ml_run, reg_run):
        expected = Classifier.load(run).predict(TEXTS)
        for fmt in ("merged", "onnx"):
            predictor = load_predictor(export(run, tmp_path / f"{run.name}-{fmt}", fmt))
            got = predictor.predict(TEXTS)
            if run == reg_run:
                np.testing.assert_allclose(got, expected, atol=1e-4)
            else:
                assert got == expected


# ---------------------------------------------------------------------------------------------- serve
def test_service_answers_labels_and_values(ml_run: Path, reg_run: Path) -> None:
    from fastapi.testclient import TestClient

    from lorafit.registry import load_runs
    from lorafit.serve import create_app

    with TestClient(create_app(load_runs([("tags", ml_run), ("value", reg_run)]))) as client:
        tags = client.post("/v1/classify", json={"texts": TEXTS, "model": "tags"}).json()["results"]
        value = client.post("/v1/classify", json={"texts": TEXTS, "model": "value"}).json()["results"]
        refused = client.post("/v1/classify", json={"texts": TEXTS, "model": "value", "threshold": 0.5})
        models = {m["name"]: m["task"] for m in client.get("/v1/models").json()["models"]}
    expected = Classifier.load(ml_run)
    assert [r["labels"] for r in tags] == expected.predict(TEXTS) and set(tags[0]) == {"labels", "scores"}
    np.testing.assert_allclose([r["value"] for r in value], Classifier.load(reg_run).predict(TEXTS), atol=1e-5)
    assert set(value[0]) == {"value"} and refused.status_code == 422
    assert models == {"tags": "multi_label_classification", "value": "regression"}


def test_page_shows_label_scores_and_values(browser_page, ml_run: Path, reg_run: Path) -> None:
    """The service's page in headless Chromium (skipped without one): bars of sigmoid scores with every
    given label highlighted for a multi-label model, the number for a regression model."""
    from test_serve_page import start_server

    from lorafit.registry import load_runs
    from lorafit.serve import create_app

    url, server, thread = start_server(create_app(load_runs([("tags", ml_run), ("value", reg_run)])))
    try:
        page = browser_page.page
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#text", TEXTS[0])
        page.click("#classify")
        page.wait_for_function("document.querySelectorAll('.bar-row').length === 3")
        highlighted = page.eval_on_selector_all(".bar-row.best", "rows => rows.map(r => r.dataset.label)")
        assert sorted(highlighted) == sorted(Classifier.load(ml_run).predict(TEXTS[:1])[0])
        page.select_option("#model", "value")
        assert "predicts a number" in page.text_content("#labels")
        page.click("#classify")
        page.wait_for_selector("#value")
        shown = float(page.text_content("#value").split(":")[1])
        assert shown == pytest.approx(Classifier.load(reg_run).predict(TEXTS[:1])[0], rel=1e-4)
        assert browser_page.errors == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_summed_losses_over_the_task_total_are_the_mean_losses() -> None:
    """Training processes each sum the loss of their slice and divide by the whole batch's total
    (``Trainer._step``): for one process that must be exactly the mean loss torch's default reduction gives,
    with and without class weights."""
    import torch
    import torch.nn.functional as F

    from lorafit.tasks import SingleLabel

    torch.manual_seed(0)
    logits, classes = torch.randn(7, 3), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    weights = torch.tensor([0.5, 2.0, 1.5])
    single = SingleLabel()
    for w in (None, weights):
        mean = F.cross_entropy(logits, classes, weight=w)
        assert torch.allclose(single.loss(logits, classes, w) / single.loss_total(classes, w), mean)
    multi, hot = MultiLabel("|"), (torch.rand(7, 3) > 0.5).float()
    for w in (None, weights):
        mean = F.binary_cross_entropy_with_logits(logits, hot, pos_weight=w)
        assert torch.allclose(multi.loss(logits, hot, w) / multi.loss_total(hot, w), mean)
    reg, target = Regression(), torch.randn(7)
    assert torch.allclose(reg.loss(logits, target, None) / reg.loss_total(target, None), F.mse_loss(logits[:, 0], target))
