"""lorafit.datacheck on crafted data: duplicates, conflicting labels, leakage, empty rows, imbalance,
token-length percentiles and ``max_length="auto"``; and ``lorafit inspect`` on top of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import make_texts, write_table
from lorafit.cli import app
from lorafit.data import LabeledData, read_labeled
from lorafit.datacheck import auto_max_length, check_data, normalize, token_lengths

runner = CliRunner()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_duplicates_and_conflicting_labels_within_training() -> None:
    train = LabeledData(["pizza song", "Pizza  song ", "goal team", "goal team", "goal team", "bread"],
                        ["food", "music", "sports", "sports", "sports", "food"], "train.csv")
    check = check_data(train)
    assert check.duplicates == 3  # the 2nd "pizza song" and the 2nd and 3rd "goal team"
    assert check.conflicting == 1 and check.conflicting_examples == ["pizza song"]
    assert set(check.duplicate_examples) == {"pizza song", "goal team"}
    assert any("more than one label" in w for w in check.warnings)
    assert normalize("  Pizza \t SONG ") == "pizza song"


def test_leakage_into_validation_and_test_is_counted_per_split() -> None:
    train = LabeledData(["pizza song", "goal team", "bread"], ["a", "b", "a"], "train.csv")
    val = LabeledData(["PIZZA song", "new text"], ["a", "b"], "val.csv")
    test = LabeledData(["goal team", "bread ", "goal team", "other"], ["b", "a", "b", "a"], "test.csv")
    check = check_data(train, {"validation": val, "test": test})
    by_name = {s.name: s for s in check.splits}
    assert by_name["validation"].overlap_with_train == 1 and by_name["validation"].overlap_examples == ["PIZZA song"]
    assert by_name["test"].overlap_with_train == 2  # distinct texts: "goal team" (twice) and "bread"
    assert sum("leakage" in w for w in check.warnings) == 2
    assert check.duplicates == 0 and check.conflicting == 0


def test_clean_data_has_no_warnings() -> None:
    texts, labels = make_texts(10, seed=3)
    check = check_data(LabeledData(texts, labels, "train.csv"))
    assert check.duplicates == 0 and check.conflicting == 0 and check.warnings == []
    assert check.train.label_counts == {"food": 10, "music": 10, "sports": 10} and check.imbalance == 1.0


def test_imbalance_and_empty_rows_warn(tmp_path: Path) -> None:
    texts = [f"pizza {w}" for w in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")] + ["song", "", "  "]
    labels = ["food"] * 10 + ["music"] * 3
    data = read_labeled(write_table(tmp_path / "t.csv", {"text": texts, "label": labels}))
    check = check_data(data)
    assert check.train.dropped_empty == 2 and check.imbalance == 10.0
    assert any("imbalanced" in w and "'food' has 10" in w for w in check.warnings)
    assert any("2 training row(s) with an empty text" in w for w in check.warnings)


def test_auto_max_length_on_a_crafted_length_distribution() -> None:
    lengths = np.array([12] * 980 + [30] * 15 + [200] * 5)  # 99% of texts have <= 30 tokens
    assert auto_max_length(lengths, limit=512) == 32  # 30 rounded up to a multiple of 8
    assert auto_max_length(lengths, limit=24) == 24  # capped by the model
    assert auto_max_length(np.array([3, 3, 3]), limit=512) == 8  # at least 8
    assert auto_max_length(np.array([10] * 99 + [300]), limit=None) == 16  # one long outlier in 100 is cut


def test_lengths_pick_max_length_and_count_truncation(tokenizer) -> None:
    short = [f"pizza song {w}" for w in ("a", "is", "was", "my", "the")] * 18 + ["pizza song"] * 9  # 4-5 tokens
    long = ["pizza " * 30, "song " * 40]  # 32 and 42 tokens with [CLS] and [SEP]
    assert token_lengths(tokenizer, long, limit=128).tolist() == [32, 42]
    assert token_lengths(tokenizer, long, limit=35).tolist() == [32, 36]  # measured up to limit + 1
    train = LabeledData(short + long[1:], ["a"] * 50 + ["b"] * 50, "train.csv")
    check = check_data(train, tokenizer=tokenizer, max_length="auto", model_limit=128)
    assert check.max_length_auto and check.max_length == 8 and check.train.truncated == 1
    assert check.length_percentiles["p50"] == 5 and check.length_percentiles["p100"] == 42
    assert any("1 of 100 training" in w and "truncated" in w for w in check.warnings)
    explicit = check_data(train, tokenizer=tokenizer, max_length=40, model_limit=128)
    assert not explicit.max_length_auto and explicit.max_length == 40 and explicit.train.truncated == 1


def test_validation_and_test_are_counted_at_the_prediction_length(tokenizer) -> None:
    short = [f"pizza song {w}" for w in ("a", "is", "was", "my", "the")] * 20  # 4-5 tokens
    train = LabeledData(short + ["song " * 40], ["a"] * 50 + ["b"] * 51, "train.csv")
    test = LabeledData(["pizza " * 30, "song"], ["a", "b"], "test.csv")  # 32 tokens, 3 tokens
    auto = check_data(train, {"test": test}, tokenizer, "auto", 128)
    assert (auto.max_length, auto.predict_max_length) == (8, 128)  # whole texts, up to the model's limit
    assert auto.train.truncated == 1 and auto.splits[1].truncated == 0
    assert any("1 of 101 training" in w and "predictions read up to 128 tokens" in w for w in auto.warnings)
    assert not any("test" in w for w in auto.warnings)
    given = check_data(train, {"test": test}, tokenizer, "auto", 128, predict_max_length=16)
    assert given.predict_max_length == 16 and given.splits[1].truncated == 1
    assert any("1 of 2 test text(s) are longer than predict_max_length=16" in w for w in given.warnings)
    fixed = check_data(train, {"test": test}, tokenizer, 24, 128)  # a chosen cut holds everywhere
    assert fixed.predict_max_length == 24 and fixed.splits[1].truncated == 1
    assert any("1 of 101 training, 1 of 2 test text(s) are longer than max_length=24" in w for w in fixed.warnings)


def test_fit_resolves_auto_and_an_explicit_length_still_works(tiny_model: str) -> None:
    from conftest import TINY_TRAIN
    from lorafit import Classifier

    texts, labels = make_texts(8, seed=4)
    texts[0] = "pizza " * 60  # one long text among 24: the 99th percentile is still the long one
    auto = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1, "validation_fraction": 0}).fit(texts, labels)
    assert auto.train_config.max_length == 64 and auto.manifest()["max_length_auto"] is True
    fixed = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1, "validation_fraction": 0, "max_length": 12})
    fixed.fit(texts, labels)
    assert fixed.train_config.max_length == 12 and fixed.data_check.train.truncated == 1
    assert fixed.manifest()["max_length_auto"] is False


def test_inspect_cli_prints_the_summary_and_warnings(tiny_model: str, tmp_path: Path) -> None:
    texts, labels = make_texts(20, seed=5)
    train = write_table(tmp_path / "train.csv", {"text": texts + [texts[0]], "label": labels + [labels[0]]})
    test = write_table(tmp_path / "test.csv", {"text": [texts[1], "pizza new"], "label": [labels[1], "food"]})
    result = runner.invoke(app, ["inspect", str(train), "--test", str(test), "--model", tiny_model,
                                 "--validation-fraction", "0"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "rows per label (3 classes)" in flat and "token lengths of the training texts" in flat
    assert "max_length 16 (auto" in flat
    assert "1 training row(s) repeat a text" in flat
    assert "leakage: 1 test text(s)" in flat
    assert "no validation data (validation_fraction=0.0" in flat  # said as `train` says it
    assert "│ validation │" not in result.output  # --validation-fraction 0: no validation split


def test_inspect_cli_holds_out_validation_like_train(tiny_model: str, train_csv: Path) -> None:
    result = runner.invoke(app, ["inspect", str(train_csv), "--model", tiny_model, "--max-length", "6"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "│ validation │" in result.output and "max_length 6 (as given)" in flat  # the split train holds out


def test_inspect_cli_says_how_far_predictions_read(tiny_model: str, train_csv: Path) -> None:
    for flags, expected in (([], "validation, test and predictions read up to 128 tokens"),
                            (["--predict-max-length", "32"], "validation, test and predictions read up to 32 tokens")):
        result = runner.invoke(app, ["inspect", str(train_csv), "--model", tiny_model, *flags])
        assert result.exit_code == 0, result.output
        assert expected in " ".join(result.output.split())
    refused = runner.invoke(app, ["inspect", str(train_csv), "--model", tiny_model, "--predict-max-length", "many"])
    assert "predict_max_length must be 'auto' or an integer" in str(refused.exception)  # main() prints it
