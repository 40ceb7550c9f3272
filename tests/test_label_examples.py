"""Label examples: training texts made from the label names ("this sentence is food"), SetFit's templated-dataset
idea, on by default for few-shot single-label data with word labels.

They join the training rows only (after the data checks), never validation; ``label_examples`` 0 turns them off;
bad values are ConfigErrors; the CLI flags reach the config, and the count lands in metrics.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_TRAIN
from helpers import LABELS, Infos, make_texts, run_main, write_table
from lorafit import Classifier, ConfigError, TrainConfig
from lorafit.cli import app
from lorafit.config import AUTO_LABEL_EXAMPLES, MULTI_LABEL, REGRESSION, SINGLE_LABEL, resolve_label_examples
from lorafit.data import LabeledData
from lorafit.label_examples import add_label_examples, label_text

runner = CliRunner()
FAST = {**TINY_TRAIN, "epochs": 1}
TEMPLATED = "this sentence is"


def _fit(tiny_model: str, texts: list, labels: list, validation: tuple | None = None, **settings: object):
    """Fit a classifier, recording the texts tokenised in ``_fit``: [training texts, validation texts]."""
    import lorafit.classifier

    calls: list[list] = []
    real = lorafit.classifier.tokenize

    def spy(tokenizer, texts, max_length):
        calls.append(list(texts))
        return real(tokenizer, texts, max_length)

    infos = Infos()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lorafit.classifier, "tokenize", spy)
        clf = Classifier(model=tiny_model, **{**FAST, **settings}).fit(texts, labels, validation=validation,
                                                                       callback=infos)
    return clf, calls, infos.messages


@pytest.fixture(scope="module")
def few_shot() -> tuple[list[str], list[str]]:
    """4 rows per class (few-shot), word labels food / music / sports."""
    return make_texts(4, seed=31)


@pytest.fixture(scope="module")
def auto_run(tiny_model: str, few_shot: tuple[list[str], list[str]]):
    """A few-shot fit with the default ``label_examples="auto"`` and a validation set of its own."""
    validation = make_texts(2, seed=32)
    clf, calls, messages = _fit(tiny_model, *few_shot, validation=validation)
    return clf, calls, messages, validation


# ------------------------------------------------------------------------------------------ the auto rule
@pytest.mark.parametrize(("task", "pairs", "classes", "smallest", "expected"), [
    (SINGLE_LABEL, False, ["negative", "positive"], 8, AUTO_LABEL_EXAMPLES),   # few-shot, word labels: on
    (SINGLE_LABEL, False, ["card_arrival", "lost_card"], 19, AUTO_LABEL_EXAMPLES),
    (SINGLE_LABEL, False, ["negative", "positive"], 20, 0),                    # >= 20 rows per class: off
    (SINGLE_LABEL, False, ["0", "1"], 8, 0),                                   # numeric names say nothing
    (SINGLE_LABEL, False, ["1", "positive"], 8, 0),                            # every name needs a letter
    (MULTI_LABEL, False, ["sports", "music"], 8, 0),
    (REGRESSION, False, ["score"], 0, 0),
    (SINGLE_LABEL, True, ["entailment", "contradiction"], 8, 0),               # text pairs
])
def test_auto_rule(task: str, pairs: bool, classes: list[str], smallest: int, expected: int) -> None:
    assert resolve_label_examples("auto", task, pairs, classes, smallest) == expected


def test_an_integer_is_taken_as_given() -> None:
    assert resolve_label_examples(2, SINGLE_LABEL, False, ["0", "1"], 500) == 2
    assert resolve_label_examples(0, SINGLE_LABEL, False, ["negative", "positive"], 4) == 0


def test_a_forced_count_with_pairs_is_refused() -> None:
    with pytest.raises(ConfigError, match="pairs.*--label-examples 0"):
        resolve_label_examples(3, SINGLE_LABEL, True, ["same", "different"], 4)
    assert resolve_label_examples(0, SINGLE_LABEL, True, ["same", "different"], 4) == 0


# ------------------------------------------------------------------------------------------ the texts
def test_label_text_reads_underscores_as_spaces() -> None:
    assert label_text("card_arrival", TrainConfig().label_template) == "this sentence is card arrival"
    assert label_text("positive", "{} review") == "positive review"
    assert label_text("a_b", "{x} [{}]") == "{x} [a b]"  # only the one {} is filled


def test_add_label_examples_appends_count_rows_per_class() -> None:
    data = LabeledData(["pizza"], ["food"], "train.csv", dropped_empty=2)
    added = add_label_examples(data, ["food", "music"], 2, "about {}")
    assert added.texts == ["pizza", "about food", "about food", "about music", "about music"]
    assert added.labels == ["food", "food", "food", "music", "music"]
    assert added.source == "train.csv" and added.dropped_empty == 2
    assert data.texts == ["pizza"]  # the user's data is left as it was


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("value", [-1, "-1", "four", "1.5", 1.5, True, None, ""])
def test_bad_label_examples_are_config_errors(value: object) -> None:
    with pytest.raises(ConfigError, match="label_examples must be 'auto' or an integer >= 0"):
        TrainConfig(label_examples=value)


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), (" AUTO ", "auto"), ("0", 0), ("4", 4), (7, 7)])
def test_label_examples_values(value: object, parsed: object) -> None:
    assert TrainConfig(label_examples=value).label_examples == parsed


@pytest.mark.parametrize("template", ["this sentence is", "{} and {}", "", "this sentence is {0}"])
def test_a_template_needs_exactly_one_placeholder(template: str) -> None:
    with pytest.raises(ConfigError, match="label_template must contain '{}' exactly once"):
        TrainConfig(label_template=template)


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_a_forced_count_needs_single_label(task: str) -> None:
    with pytest.raises(ConfigError, match="only single_label_classification.*--label-examples 0"):
        TrainConfig(task=task, label_examples=2)
    assert TrainConfig(task=task).label_examples == "auto" and TrainConfig(task=task, label_examples=0)


# ------------------------------------------------------------------------------------------ training
def test_auto_adds_label_examples_to_few_shot_training_data(auto_run, few_shot) -> None:
    clf, calls, messages, _ = auto_run
    texts, labels = few_shot
    train_texts = calls[0]
    assert train_texts[:len(texts)] == texts
    assert train_texts[len(texts):] == [f"{TEMPLATED} {label}" for label in LABELS for _ in range(AUTO_LABEL_EXAMPLES)]
    assert clf.metrics_["label_examples"] == AUTO_LABEL_EXAMPLES
    assert (f"added {AUTO_LABEL_EXAMPLES} example(s) per label made from the label names, such as "
            f"'{TEMPLATED} food' (label_examples=auto: few-shot data); --label-examples 0 turns this off") in messages


def test_label_examples_stay_out_of_validation_and_the_summary_counts_the_users_rows(auto_run) -> None:
    clf, calls, _, validation = auto_run
    assert calls[1] == validation[0]
    summary = clf.data_summary["train"]
    assert summary["rows"] == 12 and summary["label_counts"] == {label: 4 for label in LABELS}
    assert summary["label_example_rows"] == len(LABELS) * AUTO_LABEL_EXAMPLES
    assert clf.data_check.train.rows == 12  # the data checks saw only the user's rows
    assert clf.manifest()["train_config"]["label_examples"] == "auto"  # lorafit.json keeps the setting


def test_a_holdout_split_gets_no_label_examples(tiny_model: str, few_shot) -> None:
    clf, calls, messages = _fit(tiny_model, *few_shot, validation_fraction=0.5, label_examples=2)
    assert not any(TEMPLATED in text for text in calls[1]) and len(calls[1]) == 6
    assert calls[0][-6:] == [f"{TEMPLATED} {label}" for label in LABELS for _ in range(2)]
    assert any("(label_examples=2)" in m for m in messages) and clf.metrics_["label_examples"] == 2


def test_zero_turns_label_examples_off(tiny_model: str, few_shot) -> None:
    clf, calls, messages = _fit(tiny_model, *few_shot, label_examples=0)
    assert calls[0] == few_shot[0] and clf.metrics_["label_examples"] == 0
    assert clf.data_summary["train"]["label_example_rows"] == 0 and not any("label names" in m for m in messages)


def test_auto_counts_the_classes_before_the_validation_holdout(tiny_model: str) -> None:
    """20 rows per class: auto holds out 10% (18 left to train on), and adds no label examples."""
    clf, calls, _ = _fit(tiny_model, *make_texts(20, seed=33))
    assert len(calls) == 2 and clf.data_summary["train"]["rows"] == 54
    assert not any(TEMPLATED in text for text in calls[0]) and clf.metrics_["label_examples"] == 0


def test_a_forced_count_with_pairs_fails_before_training(tiny_model: str) -> None:
    pairs = [(f"pizza bread {i}", "song") for i in range(4)] + [(f"goal team {i}", "ball") for i in range(4)]
    with pytest.raises(ConfigError, match="pairs"):
        Classifier(model=tiny_model, label_examples=2, **FAST).fit(pairs, ["a"] * 4 + ["b"] * 4)


# ------------------------------------------------------------------------------------------ command line
def _train(data: Path, out: Path, model: str, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--model", model, "--no-progress", "--precision", "fp32",
            "--epochs", "1", "--min-steps", "0", *extra]


def test_cli_flags_reach_the_config_and_metrics(tiny_model: str, few_shot, tmp_path: Path) -> None:
    data = write_table(tmp_path / "train.csv", {"text": few_shot[0], "label": few_shot[1]})
    out = tmp_path / "run"
    result = runner.invoke(app, _train(data, out, tiny_model, "--label-examples", "2",
                                         "--label-template", "all about {}"))
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "added 2 example(s) per label made from the label names, such as 'all about food' (label_examples=2)" in flat
    assert json.loads((out / "metrics.json").read_text())["label_examples"] == 2
    manifest = json.loads((out / "lorafit.json").read_text())
    assert manifest["train_config"]["label_examples"] == 2 and manifest["train_config"]["label_template"] == "all about {}"
    assert manifest["data"]["train"]["rows"] == 12 and manifest["data"]["train"]["label_example_rows"] == 6
    assert "plus 6 label examples" in (out / "README.md").read_text()


@pytest.mark.parametrize(("flags", "message"), [
    (["--label-examples", "many"], "label_examples must be 'auto' or an integer >= 0"),
    (["--label-examples=-1"], "label_examples must be 'auto' or an integer >= 0"),
    (["--label-template", "about"], "label_template must contain '{}' exactly once"),
    (["--multi-label", "--label-examples", "3"], "only single_label_classification"),
])
def test_cli_bad_values_are_one_line_errors(flags: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    data = write_table(tmp_path / "train.csv", {"text": ["pizza", "song"], "label": ["food", "music"]})
    code, stderr = run_main(capsys, _train(data, tmp_path / "run", "minilm", *flags))
    assert code == 1 and message in " ".join(stderr.split()) and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


def test_tune_passes_the_flags_to_every_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lorafit.tune

    seen = {}

    def no_study(base, *args, **kwargs):
        seen.update(examples=base.train_config.label_examples, template=base.train_config.label_template)
        raise ConfigError("stopped before the study")

    monkeypatch.setattr(lorafit.tune, "tune", no_study)
    data = write_table(tmp_path / "train.csv", {"text": ["pizza", "song"], "label": ["food", "music"]})
    result = runner.invoke(app, ["tune", str(data), "--out", str(tmp_path / "study"), "--label-examples", "3",
                                   "--label-template", "{} it is"])
    assert result.exit_code != 0 and seen == {"examples": 3, "template": "{} it is"}
