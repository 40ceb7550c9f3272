"""The ``lorafit`` command line: train / evaluate / predict / info, and how errors reach the user.

Successful commands run through typer's CliRunner; exit codes and error formatting go through
``lorafit.cli.main`` (what the ``lorafit`` script runs), whose output pytest's capsys captures.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from helpers import LABELS, make_texts, write_labeled, write_table
from lorafit.cli import app, main

runner = CliRunner()


def _train_args(data: Path, out: Path, model: str, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--model", model, "--no-progress", "--precision", "fp32",
            "--epochs", "2", "--min-steps", "0", "--batch-size", "16", "--learning-rate", "5e-3", *extra]


def _main(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str, str]:
    """Run ``main(args)``; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labeled CSV with two empty texts among 60 rows."""
    texts, labels = make_texts(20, seed=6)
    texts[3], texts[10] = "", "   "
    return write_table(tmp_path_factory.mktemp("cli") / "train.csv", {"text": texts, "label": labels})


@pytest.fixture(scope="module")
def cli_run(cli_data: Path, tiny_model: str) -> tuple[Path, str]:
    """One run directory written by ``lorafit train``, and the command's output."""
    out = cli_data.parent / "run"
    result = runner.invoke(app, _train_args(cli_data, out, tiny_model, "--validation-fraction", "0.1"))
    assert result.exit_code == 0, result.output
    return out, result.output


# -------------------------------------------------------------------------------------------- train
def test_train_writes_a_run_directory(cli_run: tuple[Path, str], tiny_model_dir: Path) -> None:
    out, output = cli_run
    assert (out / "lorafit.json").is_file() and (out / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "lorafit.json").read_text())
    assert manifest["labels"] == LABELS
    assert manifest["base_model"]["path"] == str(tiny_model_dir.resolve())
    assert manifest["train_config"]["epochs"] == 2 and manifest["train_precision"] == "fp32"
    assert manifest["data"]["train"]["dropped_empty"] == 2
    assert manifest["data"]["train"]["rows"] + manifest["data"]["validation"]["rows"] == 58
    assert "training summary" in output and "run directory" in output
    flat = " ".join(output.split())
    assert "rows per label (3 classes)" in flat and "token lengths of the training texts" in flat  # data summary
    assert "2 training row(s) with an empty text were dropped" in flat and (out / "report.html").is_file()


def test_train_flags_reach_the_config(cli_data: Path, tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, _train_args(cli_data, out, tiny_model, "--r", "4", "--lora-alpha", "8",
                                            "--target-modules", "query,value", "--layers-to-transform", "1",
                                            "--eval-every", "2", "--epochs", "1", "--no-probe-init",
                                            "--validation-fraction", "0.2", "--patience", "0"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "lorafit.json").read_text())
    assert manifest["lora"]["r"] == 4 and manifest["lora"]["lora_alpha"] == 8
    assert manifest["lora"]["target_modules"] == ["query", "value"] and manifest["lora"]["layers_to_transform"] == [1]
    assert manifest["train_config"]["eval_every"] == 2 and manifest["train_config"]["probe_init"] is False
    assert manifest["data_config"]["validation_fraction"] == 0.2
    history = json.loads((out / "metrics.json").read_text())["history"]
    # 46 rows, plus 4 label examples per label (the smallest class has under 20 rows): 58 at batch 16 are
    # 4 steps, evaluated every 2
    assert [h["step"] for h in history] == [2, 4]


def test_train_with_a_validation_file(cli_data: Path, tiny_model: str, tmp_path: Path) -> None:
    texts, labels = make_texts(4, seed=13)
    validation = write_table(tmp_path / "val.parquet", {"text": texts, "label": labels})
    out = tmp_path / "run"
    result = runner.invoke(app, _train_args(cli_data, out, tiny_model, "--validation", str(validation),
                                            "--epochs", "1"))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "lorafit.json").read_text())["data"]
    assert data["validation"]["rows"] == 12 and data["validation"]["source"] == str(validation)
    assert data["train"]["rows"] == 58  # all of it: no split when a validation file is given


def test_train_into_existing_dir_without_overwrite(cli_run: tuple[Path, str], cli_data: Path, tiny_model: str,
                                                   capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import lorafit

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started although the output directory exists")

    monkeypatch.setattr(lorafit.Classifier, "fit_files", no_training)
    out, _ = cli_run
    before = (out / "lorafit.json").read_text()
    code, stdout, stderr = _main(capsys, _train_args(cli_data, out, tiny_model))
    assert code == 1
    assert stderr.startswith("error:") and "exists already" in stderr and "--overwrite" in stderr
    assert "Traceback" not in stderr + stdout
    assert (out / "lorafit.json").read_text() == before


def test_errors_are_one_line(cli_data: Path, tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / ("d" * 240) / ("run-" + "x" * 240)  # a message longer than any terminal is wide
    out.mkdir(parents=True)
    code, _, stderr = _main(capsys, _train_args(cli_data, out, tiny_model))
    assert code == 1 and stderr.startswith("error:")
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 trains on a CUDA GPU")
def test_fp16_on_a_cpu_is_a_one_line_error(cli_data: Path, tiny_model: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = _train_args(cli_data, out, tiny_model)
    args[args.index("fp32")] = "fp16"
    code, _, stderr = _main(capsys, args)
    assert code == 1 and "precision fp16 needs a CUDA GPU" in stderr and "bf16" in stderr
    assert not out.exists() and not out.with_name("run.partial").exists()


def test_missing_column_message(cli_data: Path, tiny_model: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--text-column", "sentence"))
    flat = " ".join(stderr.split())  # rich may wrap a long line
    assert code == 1
    assert "column 'sentence' not found" in flat and "columns are: text, label" in flat and "--text-column" in flat
    assert not (tmp_path / "run").exists()


def test_error_message_keeps_square_brackets(tiny_model: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    data = write_table(tmp_path / "d.csv", {"[text]": ["pizza", "song"], "label": ["food", "music"]})
    code, _, stderr = _main(capsys, _train_args(data, tmp_path / "run", tiny_model))
    assert code == 1
    assert "columns are: [text], label" in " ".join(stderr.split())


def test_empty_texts_error_mode(cli_data: Path, tiny_model: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--empty-texts", "error"))
    assert code == 1 and "2 row(s)" in stderr and "empty" in stderr
    assert not (tmp_path / "run").exists()


def test_hub_id_offline(cli_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", "nonexistent-org/nonexistent-model-xyz"))
    flat = " ".join(stderr.split())
    assert code == 1 and "nonexistent-org/nonexistent-model-xyz" in flat and "HF_HUB_OFFLINE" in flat
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,decay", [("0.9", 0.9), ("0", 0.0)])
def test_ema_decay_reaches_the_run_directory(cli_data: Path, tiny_model: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture, flag: str, decay: float) -> None:
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--ema-decay", flag))
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "run" / "lorafit.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert manifest["train_config"]["ema_decay"] == decay and metrics["ema_decay"] == decay
    card = (tmp_path / "run" / "README.md").read_text()
    assert ("exponential moving average with decay 0.9," in card) == (decay > 0)


def test_single_example_class_is_named(tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    texts, labels = make_texts(5, seed=1)
    data = write_table(tmp_path / "d.csv", {"text": texts + ["tax form"], "label": labels + ["taxes"]})
    code, _, stderr = _main(capsys, _train_args(data, tmp_path / "run", tiny_model, "--validation-fraction", "0.1"))
    assert code == 1 and "'taxes'" in stderr and "single example" in stderr


def test_small_classes_train_on_every_row_without_validation(tiny_model: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    texts, labels = make_texts(5, seed=1)
    data = write_table(tmp_path / "d.csv", {"text": texts + ["tax form"], "label": labels + ["taxes"]})
    code, stdout, stderr = _main(capsys, _train_args(data, tmp_path / "run", tiny_model))
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "run" / "lorafit.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert manifest["data"]["validation"] is None and manifest["data"]["train"]["rows"] == len(texts) + 1
    assert "taxes" in manifest["labels"] and metrics["validation"] == {}
    assert metrics["best_step"] == metrics["steps"] and "last state" in stdout
    assert "none (trained on every row" in (tmp_path / "run" / "README.md").read_text()


def test_unknown_format(tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "train.xlsx"
    data.write_bytes(b"not really excel")
    code, _, stderr = _main(capsys, _train_args(data, tmp_path / "run", tiny_model))
    assert code == 1 and "unknown file format" in stderr and ".xlsx" in stderr


def test_missing_training_file(tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, _train_args(tmp_path / "nope.csv", tmp_path / "run", tiny_model))
    assert code == 1 and stderr.startswith("error:") and "file not found" in stderr


def test_bad_flag_value_is_a_one_line_config_error(cli_data: Path, tiny_model: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--metric", "f2"))
    assert code == 1 and "metric must be one of accuracy, macro_f1, got 'f2'" in stderr
    assert "Traceback" not in stderr
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--wise-alpha", "0.5",
                                                "--no-probe-init"))
    assert code == 1 and "wise_alpha 0.5 moves the weights back towards the probe-initialised start" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--ema-decay", "1"))
    assert code == 1 and "ema_decay must be 'auto' or a number in [0, 1) (0: no averaging), got '1'" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model, "--epochs", "abc"))
    assert code == 1 and "epochs must be 'auto' or an integer >= 1, got 'abc'" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,hint", [(["train", "data.csv"], "--out"),
                                       (["train", "d.csv", "--out", "o", "--batch-size", "abc"], "--batch-size"),
                                       (["no-such-command"], "no-such-command")])
def test_usage_error_exits_2_with_usage(capsys: pytest.CaptureFixture, args: list[str], hint: str) -> None:
    code, _, stderr = _main(capsys, args)
    assert code == 2 and hint in stderr and "Usage:" in stderr


def test_usage_error_is_not_a_success(capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _main(capsys, ["train", "data.csv"])  # no --out
    assert code != 0 and "out" in stderr and "Traceback" not in stderr


def test_ctrl_c_during_training_exits_130(cli_data: Path, tiny_model: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import lorafit

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lorafit.Classifier, "fit_files", interrupted)
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "run", tiny_model))
    assert not (tmp_path / "run").exists()
    assert code == 130 and "interrupted" in stderr


def test_debug_shows_the_traceback_and_plain_mode_does_not(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lorafit import RunDirError

    with pytest.raises(RunDirError, match="not found"):
        main(["--debug", "info", str(tmp_path / "missing")])
    capsys.readouterr()
    code, stdout, stderr = _main(capsys, ["info", str(tmp_path / "missing")])
    assert code == 1 and "error:" in stderr and "run directory not found" in stderr
    assert "Traceback" not in stderr + stdout


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_json(cli_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = cli_run
    texts, labels = make_texts(5, seed=9)
    data = write_table(tmp_path / "test.jsonl", {"text": texts, "label": labels})
    result = runner.invoke(app, ["evaluate", str(out), str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "labels"} <= set(report)
    assert {"n", "unknown_labels", "data"} <= set(report) and report["n"] == 15 and report["unknown_labels"] == []
    assert report["labels"] == LABELS and set(report["per_class"]) == set(LABELS)
    assert sum(map(sum, report["confusion_matrix"])) == 15 and 0 <= report["accuracy"] <= 1
    assert report["data"]["rows"] == 15


def test_evaluate_tables_and_unknown_label_warning(cli_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = cli_run
    data = write_table(tmp_path / "test.csv", {"text": ["pizza bread", "song piano", "tax form"],
                                               "label": ["food", "music", "taxes"]})
    result = runner.invoke(app, ["evaluate", str(out), str(data)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "per class" in result.stdout
    assert "taxes" in result.stderr and "never saw" in result.stderr


# ------------------------------------------------------------------------------------------ predict
def test_predict_texts_prints_json_lines(cli_run: tuple[Path, str]) -> None:
    out, _ = cli_run
    texts = ["pizza and bread", "a song", "the team scored a goal"]
    result = runner.invoke(app, ["predict", str(out), *texts])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for text, line in zip(texts, lines):
        record = json.loads(line)
        assert record["text"] == text and record["label"] in LABELS
        assert set(record["probabilities"]) == set(LABELS)
        assert abs(sum(record["probabilities"].values()) - 1) < 1e-6
        assert record["score"] == max(record["probabilities"].values())
        assert record["probabilities"][record["label"]] == record["score"]


def test_predict_top_k(cli_run: tuple[Path, str]) -> None:
    out, _ = cli_run
    result = runner.invoke(app, ["predict", str(out), "--top-k", "2", "pizza and bread", "a song"])
    assert result.exit_code == 0, result.output
    for line in result.stdout.strip().splitlines():
        record = json.loads(line)
        probabilities = list(record["probabilities"].items())
        assert len(probabilities) == 2
        assert probabilities[0] == (record["label"], record["score"])  # best first
        assert probabilities[0][1] >= probabilities[1][1]


@pytest.fixture
def predict_input(tmp_path: Path) -> tuple[Path, list[str]]:
    texts, _ = make_texts(7, seed=11)
    texts = texts[:10] + ["", 'she said, "pizza"', "NA", "line one\nline two"] + texts[10:]
    return write_table(tmp_path / "in.csv", {"id": list(range(len(texts))), "text": texts}), texts


def test_predict_file_to_jsonl_keeps_order(cli_run: tuple[Path, str], predict_input, tmp_path: Path) -> None:
    out, _ = cli_run
    path, texts = predict_input
    target = tmp_path / "preds" / "out.jsonl"
    result = runner.invoke(app, ["predict", str(out), "--input", str(path), "--output", str(target)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == texts
    assert all(r["label"] in LABELS for r in records)
    from lorafit import Classifier

    assert [r["label"] for r in records] == Classifier.load(out).predict(texts)


def test_predict_file_to_csv_keeps_order(cli_run: tuple[Path, str], predict_input, tmp_path: Path) -> None:
    out, _ = cli_run
    path, texts = predict_input
    target = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", str(out), "--input", str(path), "--output", str(target)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["text", "label", "score"] + [f"p_{x}" for x in LABELS]
    assert len(frame) == len(texts) and frame["text"].tolist() == texts
    probs = frame[[f"p_{x}" for x in LABELS]].astype(float)
    assert ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    assert (frame["label"] == probs.idxmax(axis=1).str[2:]).all()
    with target.open(newline="", encoding="utf-8") as handle:
        assert sum(1 for _ in csv.reader(handle)) == len(texts) + 1


def test_prediction_file_permissions_follow_the_umask(cli_run: tuple[Path, str], predict_input,
                                                      tmp_path: Path) -> None:
    import os

    out, _ = cli_run
    path, _ = predict_input
    target = tmp_path / "out.jsonl"
    assert runner.invoke(app, ["predict", str(out), "--input", str(path), "--output", str(target)]).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_predict_bad_output_suffix(cli_run: tuple[Path, str], predict_input, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    out, _ = cli_run
    path, _ = predict_input
    code, _, stderr = _main(capsys, ["predict", str(out), "--input", str(path), "--output", str(tmp_path / "o.txt")])
    assert code == 1 and ".jsonl or .csv" in stderr
    assert not (tmp_path / "o.txt").exists()


def test_predict_needs_texts_or_input(cli_run: tuple[Path, str], capsys: pytest.CaptureFixture) -> None:
    out, _ = cli_run
    code, _, stderr = _main(capsys, ["predict", str(out)])
    assert code == 1 and "nothing to classify" in stderr


# --------------------------------------------------------------------------------------------- info
def test_info_prints_base_model_and_labels(cli_run: tuple[Path, str], tiny_model_dir: Path) -> None:
    out, _ = cli_run
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    cells = re.sub(r"[\s│]", "", result.stdout)  # the table at 80 columns wraps a long path over lines, whole
    assert "base model" in result.stdout and str(tiny_model_dir.resolve()) in cells
    assert "3: food, music, sports" in result.stdout


def test_info_json(cli_run: tuple[Path, str]) -> None:
    out, _ = cli_run
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["manifest"]["labels"] == LABELS and "history" in info["metrics"]


def test_info_on_a_newer_run_directory(cli_run: tuple[Path, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    import shutil

    out, _ = cli_run
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    manifest = json.loads((copy / "lorafit.json").read_text())
    (copy / "lorafit.json").write_text(json.dumps({**manifest, "format_version": 999}))
    code, _, stderr = _main(capsys, ["info", str(copy)])
    assert code == 1 and "newer" in stderr


def test_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    code, stdout, _ = _main(capsys, ["--help"])
    assert code == 0
    assert all(verb in stdout for verb in ("train", "evaluate", "predict", "info"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_evaluate_reads_every_format(cli_run: tuple[Path, str], tmp_path: Path, suffix: str) -> None:
    out, _ = cli_run
    data = write_labeled(tmp_path / f"test{suffix}", n_per_class=3, seed=12)
    result = runner.invoke(app, ["evaluate", str(out), str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    texts, labels = make_texts(3, seed=12)
    from lorafit import Classifier

    assert report["accuracy"] == pytest.approx(Classifier.load(out).evaluate(texts, labels)["accuracy"])


# ----------------------------------------------------------------------------- calibration and abstaining
def test_abstaining_run_through_train_predict_and_evaluate(cli_data: Path, tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "abstain_run"
    result = runner.invoke(app, _train_args(cli_data, out, tiny_model, "--validation-fraction", "0.2",
                                            "--threshold", "0.9", "--unknown-label", "not_sure"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "lorafit.json").read_text())
    assert manifest["abstain"] == {"threshold": 0.9, "unknown_label": "not_sure"}
    texts = ["pizza and bread", "a song"]
    records = [json.loads(line) for line in runner.invoke(app, ["predict", str(out), "--threshold", "1", *texts])
               .stdout.splitlines()]
    assert [r["label"] for r in records] == ["not_sure", "not_sure"]
    assert all(r["score"] == max(r["probabilities"].values()) for r in records)
    overridden = runner.invoke(app, ["predict", str(out), "--threshold", "0", *texts]).stdout.splitlines()
    assert all(json.loads(line)["label"] in LABELS for line in overridden)
    data = write_table(tmp_path / "test.csv", {"text": ["pizza bread", "song piano", "goal team"],
                                               "label": ["food", "music", "sports"]})
    report = json.loads(runner.invoke(app, ["evaluate", str(out), str(data), "--json", "--oos-label", "sports"]).stdout)
    assert 0 <= report["ece"] <= 1 and 0 <= report["brier"] <= 2 and report["temperature"] > 0
    assert report["abstain"]["threshold"] == 0.9 and report["abstain"]["oos_label"] == "sports"
    tables = runner.invoke(app, ["evaluate", str(out), str(data), "--oos-label", "sports"]).stdout
    assert "calibration" in tables and "out-of-scope recall" in tables


@pytest.mark.parametrize("flag,value", [("--class-weights", "inverse"), ("--target-precision", "1.5"),
                                        ("--threshold", "2")])
def test_bad_scoring_flags_are_one_line_errors(cli_data: Path, tiny_model: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture, flag: str, value: str) -> None:
    code, _, stderr = _main(capsys, _train_args(cli_data, tmp_path / "bad", tiny_model, flag, value))
    assert code == 1 and flag[2:].replace("-", "_") in stderr and value in stderr and "Traceback" not in stderr
    assert not (tmp_path / "bad").exists()
